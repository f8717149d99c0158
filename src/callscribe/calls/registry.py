"""The call registry: every live call of the process, keyed by (tenant, namespace, guid).

Media adapters register media here (MediaRegistry); control APIs start and stop transcription here,
naming the participants they mean (all by default); a start may hand over a PulledSource, which the
registry starts and keeps with the call. Read views serve the native API. Calls whose media ended
stay for `retention_s` (stop after hang-up, state views), then are dropped; the store keeps their
history. Nothing here knows which protocol or control surface a call came from.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from callscribe.calls.call import Call, CallContext, MediaSession, NoCapacity
from callscribe.calls.events import CallRef, EventBus
from callscribe.calls.leg import Leg, StreamParams
from callscribe.calls.media import (MAX_EXTERNAL_ID, MAX_PARTICIPANT_ID, MediaRefused, PulledSource, TrackSpec, identity_problem,
                                   track_specs, valid_id)

if TYPE_CHECKING:
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.metrics import Metrics

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # tenant, namespace, guid
SOURCE_START_TIMEOUT_S = 30.0  # a pulled source that has no media by then is reported as failed


class RegistryError(Exception):
    """A control operation the registry will not do; subclasses say why."""


class CallNotFound(RegistryError):
    pass


class AlreadyStarted(RegistryError):
    pass


class AlreadyStopped(RegistryError):
    pass


class MediaEnding(RegistryError):
    """The call's media is ending (a hang-up or SIPREC BYE is being processed)."""


class NotReady(RegistryError):
    """The speech model is not loaded (yet)."""


class UnsupportedLanguage(RegistryError):
    pass


class BadIdentity(RegistryError):
    """A call id, participant or external id that cannot be kept (too long, control characters)."""


class ShuttingDown(RegistryError):
    """The server is draining before it stops: no new legs or media."""


class SourceFailed(RegistryError):
    """A pulled source could not connect its media; the message says why, `kind` what sort of
    failure it was (see MediaRefused)."""

    def __init__(self, reason: str, kind: str = "failed") -> None:
        super().__init__(reason)
        self.kind = kind


__all__ = ["CallRegistry", "RegistryError", "CallNotFound", "AlreadyStarted", "AlreadyStopped",
           "MediaEnding", "NoCapacity", "NotReady", "UnsupportedLanguage", "SourceFailed", "ShuttingDown", "BadIdentity",
           "StreamParams"]


class CallRegistry:
    """Implements callscribe.calls.media.MediaRegistry. Use from the event loop only."""

    def __init__(self, bus: EventBus, scheduler: Callable[[], "AsrScheduler | None"], data_dir: Path, *,
                 languages: Callable[[], Iterable[str] | None] = lambda: None, metrics: "Metrics | None" = None,
                 retention_s: float = 900.0, max_recording_s: float = 4 * 3600.0,
                 max_call_s: float | None = None):
        self._ctx = CallContext(bus=bus, scheduler=scheduler, data_dir=Path(data_dir), metrics=metrics,
                                max_recording_s=max_recording_s)
        self._languages = languages
        self._calls: dict[Key, Call] = {}
        self._arrived = asyncio.Condition()
        self.retention_s = retention_s
        self.max_call_s = max_call_s  # a call's media ends at this age, whatever brings it (SIP, a pull)
        self._ending: set[asyncio.Task[None]] = set()
        self.draining = False  # set at SIGTERM: calls in progress finish, nothing new starts
        self._sweeper: asyncio.Task[None] | None = None
        if metrics is not None:  # read at scrape time, so it is never stale
            metrics.active_calls.set_function(lambda: sum(1 for c in list(self._calls.values()) if c.live))

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="call-registry-sweeper")

    async def close(self) -> None:
        """End every call's media (closing open intervals so their finals are kept), then stop."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for call in list(self._calls.values()):
            await call.stop_sources()
            for session in list(call.sessions):
                try:
                    await asyncio.wait_for(session.end("shutdown"), timeout=10)
                except Exception:
                    log.exception("ending call %s at shutdown failed", call.ref.call_id)
            call.discard()
        self._calls.clear()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(self.retention_s / 4, 0.05), max((self.max_call_s or 60.0) / 4, 0.05)))
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Drop calls whose media ended more than retention_s ago; end the media of calls older than
        max_call_s (media no adapter bounds itself: a SIP dialog, a stream URL that never ends)."""
        now = time.monotonic() if now is None else now
        for key, call in list(self._calls.items()):
            if self.max_call_s and call.live and now - call.pending_since > self.max_call_s and not call.ending:
                task = asyncio.create_task(self._end_call(call, f"longer than the maximum of {self.max_call_s:.0f} s"))
                self._ending.add(task)
                task.add_done_callback(self._ending.discard)
            idle_since = call.ended_at if call.media_state == "ended" else (
                call.pending_since if call.media_state == "pending" else None)
            if idle_since is not None and now - idle_since > self.retention_s and not call.lock.locked():
                call.discard()
                del self._calls[key]

    async def _end_call(self, call: Call, reason: str) -> None:
        log.warning("call %s: media ended: %s", call.ref.call_id, reason)
        for session in list(call.sessions):
            await session.end(reason)
        await call.stop_sources()

    # -- media (MediaRegistry) ------------------------------------------------------------------------

    def _new_call(self, key: Key) -> Call:
        tenant, namespace, guid = key
        call = Call(CallRef(str(uuid.uuid4()), tenant, namespace, guid), self._ctx)
        self._calls[key] = call
        return call

    async def media_connected(self, *, tenant: str, namespace: str, guid: str, tracks: Sequence[str | TrackSpec],
                              source: str, metadata: dict[str, Any] | None = None) -> MediaSession:
        key = (tenant, namespace, guid)
        if self.draining:
            raise MediaRefused("the server is shutting down", capacity=True)
        specs = track_specs(tracks)
        if not specs:
            raise MediaRefused("media with no tracks")
        problem = identity_problem(guid, [t.participant for t in specs if t.participant is not None])
        if problem or not all(valid_id(t.name, MAX_PARTICIPANT_ID) for t in specs):
            raise MediaRefused(problem or "track names must be short printable strings")
        call = self._calls.get(key)
        if call is None:
            call = self._new_call(key)
        busy = [t.name for t in specs if t.name in call.live_tracks()]
        if busy:
            raise MediaRefused(f"media for track(s) {', '.join(busy)} of this call is already connected")
        session = MediaSession(call, specs, source)
        call.add_session(session, metadata)
        async with self._arrived:
            self._arrived.notify_all()
        return session

    # -- control ---------------------------------------------------------------------------------------

    def check_language(self, language: str) -> None:
        langs = self._languages()
        if langs is None:
            raise NotReady()
        langs = {str(x).lower() for x in langs}
        tag = language.strip().lower().replace("_", "-")
        if not tag or (tag not in langs and tag.split("-")[0] not in langs):
            raise UnsupportedLanguage(language)

    def check_start(self, guid: str, params: StreamParams) -> None:
        """What a start checks before it looks for the call: ShuttingDown, BadIdentity, NotReady,
        UnsupportedLanguage (a cluster node checks the same before it asks the others)."""
        if self.draining:
            raise ShuttingDown()
        self.check_identity(guid, params)
        self.check_language(params.language)

    def check_identity(self, guid: str, params: StreamParams) -> None:
        """BadIdentity for ids that cannot be kept: the same answer on any node of a cluster."""
        problem = identity_problem(guid, list(params.participants.values())) or next(
            (f"external ids must be at most {MAX_EXTERNAL_ID} printable characters"
             for v in params.external_ids.values() if v and not valid_id(v, MAX_EXTERNAL_ID)), None)
        if problem:
            raise BadIdentity(problem)

    async def _wait_for_media(self, key: Key, wait_s: float) -> Call | None:
        def ready() -> bool:
            call = self._calls.get(key)
            return call is not None and call.live

        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(ready), timeout=wait_s)
            except asyncio.TimeoutError:
                return None
        return self._calls.get(key)

    async def start_streaming(self, tenant: str, namespace: str, guid: str, params: StreamParams, *,
                              participants: Sequence[str] | None = None, wait_s: float = 0.0,
                              source: PulledSource | None = None) -> dict[str, Leg]:
        """Open a streaming interval: a new stream id and pipeline for each participant (all by default).

        Waits up to `wait_s` for the call's media. With a `source`, a call that has no live media
        starts it (the source connects the media) and keeps it until the call is discarded.
        Raises CallNotFound, AlreadyStarted, MediaEnding, NoCapacity, NotReady, UnsupportedLanguage,
        SourceFailed, ShuttingDown.
        """
        self.check_start(guid, params)
        key = (tenant, namespace, guid)
        call = self._calls.get(key)
        if call is not None and call.ending:
            raise MediaEnding(guid)
        started: PulledSource | None = None
        if (call is None or not call.live) and source is not None:
            call = await self._start_source(key, source)
            started = source
        if call is None or not call.live:
            call = await self._wait_for_media(key, wait_s) if wait_s > 0 else None
            if call is None or not call.live:
                raise CallNotFound(guid)
        try:
            async with call.lock:
                if any(p in call.legs for p in (participants or call.legs)):
                    raise AlreadyStarted(guid)
                plan = call.plan(params, participants)
                if not plan:
                    raise CallNotFound(guid)  # media ended while we waited for the lock
                try:
                    return call.open_legs(params, plan, participants)
                except NoCapacity:
                    if self._ctx.metrics is not None:
                        self._ctx.metrics.refused.inc()
                    raise
        except BaseException:
            if started is not None:  # a pull this start began must not outlive the refusal
                await call.stop_source(started)
            raise

    async def _start_source(self, key: Key, source: PulledSource) -> Call:
        tenant, namespace, guid = key
        try:
            # No task in between (as wait_for would make): the legs open before anything else runs,
            # so a source's first audio is transcribed.
            async with asyncio.timeout(SOURCE_START_TIMEOUT_S):
                await source.start(self, tenant=tenant, namespace=namespace, guid=guid)
        except MediaRefused as refused:
            raise SourceFailed(refused.reason, refused.kind) from None
        except asyncio.TimeoutError:
            await source.stop()
            raise SourceFailed(f"the source connected no media in {SOURCE_START_TIMEOUT_S:.0f} s", "no-media") from None
        call = self._calls.get(key)
        if call is None or not call.live:
            await source.stop()
            raise SourceFailed("the source connected no media", "no-media")
        call.sources.append(source)
        return call

    async def stop_streaming(self, tenant: str, namespace: str, guid: str, *,
                             participants: Sequence[str] | None = None) -> dict[str, Leg]:
        """Close the open interval (of these participants) and return its legs with their final summaries.

        A stop after the media ended reports, once, the interval that the hang-up closed.
        Raises CallNotFound, AlreadyStopped.
        """
        call = self._calls.get((tenant, namespace, guid))
        if call is None:
            raise CallNotFound(guid)
        async with call.lock:
            open_ids = [p for p in call.legs if participants is None or p in participants]
            if open_ids:
                return await call.close_legs(open_ids, reason="stop")
            reported = {p: leg for p, leg in call.unacked.items() if participants is None or p in participants}
            if reported:
                for p in reported:
                    del call.unacked[p]
                return reported
            raise AlreadyStopped(guid)

    # -- views (native API) -------------------------------------------------------------------------------

    def find(self, tenant: str, guid: str, namespace: str | None = None) -> Call | None:
        """The call with this guid in this tenant (any namespace unless given; the newest wins)."""
        if namespace is not None:
            return self._calls.get((tenant, namespace, guid))
        found = [c for (t, _, g), c in self._calls.items() if t == tenant and g == guid]
        return max(found, key=lambda c: c.created_at) if found else None

    def list_calls(self, tenant: str) -> list[dict[str, Any]]:
        calls = [c for (t, _, _), c in self._calls.items() if t == tenant]
        return [c.snapshot() for c in sorted(calls, key=lambda c: c.created_at)]

    def get_call(self, tenant: str, guid: str, namespace: str | None = None) -> dict[str, Any] | None:
        call = self.find(tenant, guid, namespace)
        return call.snapshot() if call is not None else None

    def get_call_by_id(self, tenant: str, call_id: str) -> dict[str, Any] | None:
        for (t, _, _), c in self._calls.items():
            if t == tenant and c.ref.call_id == call_id:
                return c.snapshot()
        return None
