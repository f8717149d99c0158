"""The call registry of a cluster node: a command for a call whose media is on another node is
carried out there (request/reply over Redis), and answered here with the same legs, summaries and
exceptions, so the control surfaces above need no change.

A start is routed before this node's own refusals: a call whose media is live on another node is
started there even while this node is draining or loading its model (that node answers with its
own refusals). A start for media that has arrived nowhere yet, or whose call has ended (wherever),
waits, up to the same `wait_s`, for it to arrive here or on any other node (the 400-203 wait works
cluster-wide), as one node waits for an ended call's media to come back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Sequence

from callscribe.calls.leg import Leg, StreamParams
from callscribe.calls.media import PulledSource
from callscribe.calls.registry import CallNotFound, CallRegistry, NotReady
from callscribe.cluster import wire
from callscribe.cluster.node import ClusterNode, NotListening, RemoteError
from callscribe.store.repository import jsonable

log = logging.getLogger(__name__)
POLL_S = 0.1  # how often a waiting start looks at the directory
START_TIMEOUT_S = 60.0  # a forwarded start opens legs on a call already live there
STOP_TIMEOUT_S = 120.0  # a stop waits for its last finals on the owning node


class ClusterRegistry(CallRegistry):
    """A CallRegistry whose start, stop and views reach calls on other nodes of the cluster."""

    node: ClusterNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The call view a stop carried out elsewhere brought back, for the get_call that follows it.
        self._remote_views: dict[tuple[str, str, str], dict[str, Any]] = {}

    def attach(self, node: ClusterNode) -> None:
        self.node = node
        node.handlers.update({"start": self._serve_start, "stop": self._serve_stop, "get_call": self._serve_get_call,
                              "list_calls": self._serve_list_calls})
        node.held_calls = self.held

    def held(self) -> list[tuple[str, str, str, str, bool]]:
        """(tenant, namespace, guid, call_id, live) of every call this node holds; live while its
        media is connected or ending (a start for it is answered here)."""
        return [(t, n, g, c.ref.call_id, bool(c.live or c.ending)) for (t, n, g), c in list(self._calls.items())]

    async def close(self) -> None:
        """End this node's calls, then take their directory entries out at once (not a TTL later):
        a start for one of them then waits for its media anywhere, and a stop finds no owner."""
        closing = [(t, n, g, c.ref.call_id) for (t, n, g), c in list(self._calls.items())]
        try:
            await super().close()
        finally:
            if closing and getattr(self, "node", None) is not None:
                try:
                    async with asyncio.timeout(5.0):
                        await self.node.forget(closing)
                except Exception as exc:  # Redis away: the entries expire with their TTL
                    log.warning("cluster: directory entries of closed calls not removed: %s", exc or type(exc).__name__)

    def open_legs(self) -> int:
        """Legs transcribing on this node now (its load, as the heartbeat reports it)."""
        return sum(len(c.legs) for c in list(self._calls.values()))

    def _here(self, key: tuple[str, str, str]) -> bool:
        call = self._calls.get(key)
        return call is not None and bool(call.live or call.ending)

    async def _elsewhere(self, key: tuple[str, str, str], live: bool = False) -> str | None:
        """The other live node the directory names for this call (with `live`, only while the
        call's media is live or ending there)."""
        entry = await self.node.owner(*key)
        if entry is None or entry.get("node") == self.node.id or entry.get("node") not in self.node.peers:
            return None
        if live and not entry.get("live", True):
            return None
        return str(entry["node"])

    async def start_streaming(self, tenant: str, namespace: str, guid: str, params: StreamParams, *,
                              participants: Sequence[str] | None = None, wait_s: float = 0.0,
                              source: PulledSource | None = None) -> dict[str, Leg]:
        # What every node answers alike comes first; draining and model readiness are this node's
        # own, so they are checked (by super) only for a call whose media is here or starts here.
        self.check_identity(guid, params)
        try:
            self.check_language(params.language)
        except NotReady:
            pass  # loading here: the node holding the call answers for its own model
        key = (tenant, namespace, guid)
        deadline = time.monotonic() + wait_s
        while True:
            if self._here(key):
                return await super().start_streaming(tenant, namespace, guid, params, participants=participants,
                                                     source=source)
            remaining = deadline - time.monotonic()
            owner = await self._elsewhere(key, live=True)
            if owner is not None:
                try:
                    answer = await self.node.call(owner, "start", {
                        "key": list(key), "params": wire.params_json(params),
                        "participants": None if participants is None else list(participants)},
                        timeout_s=START_TIMEOUT_S)
                    return wire.legs_from(answer)
                except (wire.NotHere, NotListening):  # its media ended there, or it left: look again, as below
                    pass
                except RemoteError as exc:
                    log.warning("start of %s on node %s: %s", guid, owner, exc)
                    raise NotReady() from None
            if source is not None or (remaining <= 0 and key in self._calls):
                # A pull starts here; an ended call held here is answered as one node answers it.
                return await super().start_streaming(tenant, namespace, guid, params, participants=participants,
                                                     source=source)
            if remaining <= 0:  # no live media anywhere: 400-203
                raise CallNotFound(guid)
            await self._wait_for_media(key, min(POLL_S, remaining))

    async def stop_streaming(self, tenant: str, namespace: str, guid: str, *,
                             participants: Sequence[str] | None = None) -> dict[str, Leg]:
        key = (tenant, namespace, guid)
        if self._here(key):
            return await super().stop_streaming(tenant, namespace, guid, participants=participants)
        # An ended copy here answers only while no other node holds the call live (its media came
        # back there, and a start may have opened legs on it).
        owner = await self._elsewhere(key, live=key in self._calls)
        if owner is None:
            if key in self._calls:
                return await super().stop_streaming(tenant, namespace, guid, participants=participants)
            raise CallNotFound(guid)
        try:
            answer = await self.node.call(owner, "stop", {
                "key": list(key), "participants": None if participants is None else list(participants)},
                timeout_s=STOP_TIMEOUT_S)
        except RemoteError as exc:
            log.warning("stop of %s on node %s: %s", guid, owner, exc)
            raise NotReady() from None
        if answer.get("view") is not None:  # what get_call answers right after (ASAPP's stop reads it)
            if len(self._remote_views) > 1000:  # surfaces that never read them back: keep it bounded
                self._remote_views.clear()
            self._remote_views[key] = answer["view"]
        return wire.legs_from(answer["legs"])

    def get_call(self, tenant: str, guid: str, namespace: str | None = None) -> dict[str, Any] | None:
        view = super().get_call(tenant, guid, namespace)
        if namespace is not None and (view is None or not self._here((tenant, namespace, guid))):
            # A stop carried out elsewhere: its view, not an ended copy held here.
            remote = self._remote_views.pop((tenant, namespace, guid), None)
            if remote is not None:
                return remote
        return view

    async def cluster_get_call(self, tenant: str, guid: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The live view of a call wherever its media is (the native API reads this)."""
        call = self.find(tenant, guid, namespace)
        if call is not None and (call.live or call.ending):
            return call.snapshot()
        view = call.snapshot() if call is not None else None  # ended here: the answer unless live elsewhere
        entry = await self.node.owner(tenant, namespace, guid)
        if entry is None or entry.get("node") in (None, self.node.id) or entry.get("node") not in self.node.peers:
            return view
        if view is not None and not entry.get("live", True):
            return view
        try:
            answer = await self.node.call(str(entry["node"]), "get_call",
                                          {"tenant": tenant, "guid": guid, "namespace": namespace}, timeout_s=10.0)
        except (RemoteError, NotReady):
            return view
        return answer if isinstance(answer, dict) else view

    async def cluster_list_calls(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's live calls on every node (the native list and the dashboard read this); a
        node that does not answer in a few seconds is left out."""
        peers = [p for p in self.node.peers if p != self.node.id]
        answers = await asyncio.gather(*(self.node.call(p, "list_calls", {"tenant": tenant}, timeout_s=5.0)
                                         for p in peers), return_exceptions=True)
        calls = list(super().list_calls(tenant))
        for answer in answers:
            if isinstance(answer, list):
                calls.extend(c for c in answer if isinstance(c, dict))
        return calls

    # -- what other nodes ask of this one ----------------------------------------------------------------

    async def _serve_start(self, args: dict[str, Any]) -> Any:
        tenant, namespace, guid = args["key"]
        if not self._here((tenant, namespace, guid)):
            # Ended (or gone) here: the asking node waits for the media wherever it comes back, not
            # this node alone.
            raise wire.NotHere(guid)
        legs = await CallRegistry.start_streaming(self, tenant, namespace, guid, wire.params_from(args["params"]),
                                                  participants=args.get("participants"))
        return wire.legs_json(legs)

    async def _serve_stop(self, args: dict[str, Any]) -> Any:
        tenant, namespace, guid = args["key"]
        legs = await CallRegistry.stop_streaming(self, tenant, namespace, guid, participants=args.get("participants"))
        return {"legs": wire.legs_json(legs), "view": jsonable(super().get_call(tenant, guid, namespace))}

    async def _serve_get_call(self, args: dict[str, Any]) -> Any:
        return jsonable(super().get_call(args["tenant"], args["guid"], args.get("namespace")))

    async def _serve_list_calls(self, args: dict[str, Any]) -> Any:
        return jsonable(super().list_calls(str(args["tenant"])))
