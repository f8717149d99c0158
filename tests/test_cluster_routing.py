"""Start routing and call placement across nodes: ClusterRegistry and ClusterNode instances (three
"nodes" in one event loop) against a real redis-server, with the scripted speech scheduler of
test_registry (no model, no database: the registry and the directory are what is under test).

- A node that is draining or loading its model still routes a start to the node holding the call;
  its own refusals stay for its own calls.
- A start for a guid whose call ended on another node waits for the media across the cluster (as
  one node waits for an ended call's media to come back), not on the node where it ended.
- A URL for a known call names one node whichever node issues it: the node holding the call, else
  the same choice from every issuer.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest

from callscribe.calls.events import EventBus
from callscribe.calls.registry import CallNotFound, NotReady, ShuttingDown
from callscribe.cluster.node import ClusterNode
from callscribe.cluster.placement import CallPlacement
from callscribe.cluster.registry import ClusterRegistry
from callscribe.config import load_settings
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)
from test_registry import TWILIO, FakeScheduler, params, redactor  # noqa: F401 (fixture)

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here
HANG_GUARD_S = 60.0  # not a timing assertion


class Peer:
    def __init__(self, name: str, root, redis_url: str) -> None:
        settings = load_settings(data_dir=root / name, redis_url=redis_url, database_url=PG, node_id=name,
                                 public_url=f"http://{name}.test", cluster_ttl_s=4)
        self.name = name
        self.url = settings.resolved_public_url
        self.bus = EventBus()
        self.scheduler = FakeScheduler()
        self.languages: set[str] | None = {"en"}
        self.registry = ClusterRegistry(self.bus, lambda: self.scheduler, root / name, languages=lambda: self.languages,
                                        retention_s=600)
        self.node = ClusterNode(settings)
        self.registry.attach(self.node)
        self.full = False
        self.node.status = lambda: {"ready": self.languages is not None, "draining": self.registry.draining,
                                    "full": self.full, "legs": self.registry.open_legs()}


@asynccontextmanager
async def peers(tmp_path, redis_url, *names: str) -> AsyncIterator[dict[str, Peer]]:
    nodes = {name: Peer(name, tmp_path, redis_url) for name in names}
    for peer in nodes.values():
        await peer.node.start(peer.bus)
    await beat(nodes)
    try:
        yield nodes
    finally:
        for peer in nodes.values():  # in the app's order: the calls close, then the node leaves
            await peer.registry.close()
            await peer.node.stop()


async def beat(nodes: dict[str, Peer]) -> None:
    """Every node's heartbeat now (as the periodic one would), so each sees the others' state."""
    for peer in nodes.values():
        await peer.node.beat()
    for peer in nodes.values():
        await peer.node.beat()


async def in_directory(peer: Peer, guid: str) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while (await peer.node.owner("acme", "twilio", guid) or {}).get("node") != peer.name:
            await asyncio.sleep(0.02)


async def test_a_draining_or_loading_node_routes_a_start_to_the_node_holding_the_call(tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        await a.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-route", tracks=TWILIO,
                                         source="test")
        await in_directory(a, "CA-route")
        b.registry.draining = True  # SIGTERM'd, and
        b.languages = None  # its model not loaded (as while it starts)
        legs = await b.registry.start_streaming("acme", "twilio", "CA-route", params(), wait_s=5.0)
        assert set(legs) == {"customer", "agent"}
        assert a.registry.get_call("acme", "CA-route")["streaming"]  # opened on A, where the media is

        # B's own calls still get B's refusals.
        await a.registry.stop_streaming("acme", "twilio", "CA-route")
        b.registry.draining = False
        await b.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-local", tracks=TWILIO,
                                         source="test")
        b.registry.draining = True
        with pytest.raises(ShuttingDown):
            await b.registry.start_streaming("acme", "twilio", "CA-local", params())
        b.registry.draining = False
        with pytest.raises(NotReady):
            await b.registry.start_streaming("acme", "twilio", "CA-local", params())


async def test_a_start_for_a_call_that_ended_elsewhere_waits_for_its_media_anywhere(tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        media = await a.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-again", tracks=TWILIO,
                                                 source="test")
        await in_directory(a, "CA-again")
        await media.end("hangup")  # ended on A; A keeps the call (and its entry) for a late stop

        # The guid's media comes back on C while B waits: B starts it there (A, asked while its
        # entry still read live, answers that the call is not live there; it does not wait alone).
        pending = asyncio.create_task(b.registry.start_streaming("acme", "twilio", "CA-again", params(),
                                                                 wait_s=HANG_GUARD_S))
        await asyncio.sleep(0.5)  # B has looked at the directory (A's ended call) and is waiting
        assert not pending.done()
        again = await c.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-again", tracks=TWILIO,
                                                 source="test")
        legs = await asyncio.wait_for(pending, HANG_GUARD_S)
        assert set(legs) == {"customer", "agent"}
        assert c.registry.get_call("acme", "CA-again")["streaming"]
        assert not a.registry.get_call("acme", "CA-again")["streaming"]

        # Ended on C too: the heartbeat marks the entry ended, and with nothing coming back the
        # start is answered as one node answers it, 400-203 (CallNotFound) after the wait.
        await c.registry.stop_streaming("acme", "twilio", "CA-again")
        await again.end("hangup")
        await beat(nodes)
        entry = await b.node.owner("acme", "twilio", "CA-again")
        assert entry is not None and entry["node"] == "c" and entry["live"] is False
        with pytest.raises(CallNotFound):
            await b.registry.start_streaming("acme", "twilio", "CA-again", params(), wait_s=0.3)


async def test_urls_of_one_call_name_one_node_whichever_node_issues_them(tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        places = {name: CallPlacement(peer.node, 300) for name, peer in nodes.items()}
        urls = {peer.url for peer in nodes.values()}
        for i in range(12):
            guid = f"conv-{i}"
            # Asked of all three at once (the roles of a call ask for their URLs concurrently).
            chosen = await asyncio.gather(*(places[n].url_for("acme", "twilio", guid) for n in ("a", "b", "c")))
            assert len(set(chosen)) == 1 and chosen[0] in urls, chosen
        # Not always the same node: calls spread over the open nodes.
        spread = {await places["a"].url_for("acme", "twilio", f"spread-{i}") for i in range(24)}
        assert len(spread) > 1

        # A call whose media is on B: every issuer names B.
        await nodes["b"].registry.media_connected(tenant="acme", namespace="twilio", guid="held", tracks=TWILIO,
                                                  source="test")
        await in_directory(nodes["b"], "held")
        for n in ("a", "b", "c"):
            assert await places[n].url_for("acme", "twilio", "held") == nodes["b"].url

        # Full and draining nodes get no new calls; with none open, the issuer's headroom choice.
        nodes["a"].full = True
        nodes["c"].registry.draining = True
        await beat(nodes)
        assert {await places["a"].url_for("acme", "twilio", f"new-{i}") for i in range(8)} == {nodes["b"].url}
        # ... but the held call's other legs still go to B while it is merely full.
        nodes["b"].full = True
        await beat(nodes)
        assert await places["c"].url_for("acme", "twilio", "held") == nodes["b"].url


async def test_a_stop_or_view_on_a_node_with_an_ended_copy_reaches_the_node_holding_the_call_live(
        tmp_path, redis_url, redactor):
    async with peers(tmp_path, redis_url, "a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        first = await a.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-back", tracks=TWILIO,
                                                 source="test")
        await in_directory(a, "CA-back")
        await first.end("hangup")  # A keeps its ended copy (for a late stop)
        await c.registry.media_connected(tenant="acme", namespace="twilio", guid="CA-back", tracks=TWILIO,
                                         source="test")
        await in_directory(c, "CA-back")
        await b.registry.start_streaming("acme", "twilio", "CA-back", params(), wait_s=5.0)
        assert c.registry.get_call("acme", "CA-back")["streaming"]

        # A's view is C's live call, not its ended copy.
        seen = await a.registry.cluster_get_call("acme", "CA-back", "twilio")
        assert seen is not None and seen["call_id"] == c.registry.get_call("acme", "CA-back")["call_id"]
        assert seen["streaming"]

        # A stop sent to A stops the legs on C (and the view read after it is C's).
        legs = await a.registry.stop_streaming("acme", "twilio", "CA-back")
        assert set(legs) == {"customer", "agent"}
        assert not c.registry.get_call("acme", "CA-back")["streaming"]
        assert a.registry.get_call("acme", "CA-back", "twilio")["call_id"] == seen["call_id"]
