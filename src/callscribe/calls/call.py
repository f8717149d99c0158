"""One call: its media sessions, tracks, streaming intervals and the events it publishes.

Everything here runs on the event loop, except the engine's on_event callbacks, which hop onto the
loop with call_soon_threadsafe. Events go through one queue per call so that every event of a call
gets the next sequence number in the order it is published, and so a stop can wait until the last
final of its interval has been published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from callscribe.asr.types import TranscriptEvent
from callscribe.calls.events import CallRef, CallStateEvent, EventBus, UtteranceEvent, utcnow
from callscribe.calls.leg import Leg, StreamParams, Track
from callscribe.calls.recording import LegRecorder
from callscribe.calls.redaction import CallRedaction, Shown
from callscribe.calls.roles import role_of

log = logging.getLogger(__name__)

MAX_GAP_FILL_MS = 10_000  # a timestamp jump beyond this is a discontinuity, not silence to feed
DRAIN_TIMEOUT_S = 120.0  # how long a stop waits for the engine's last finals


class NoCapacity(Exception):
    """The speech scheduler cannot take the legs a start asks for."""


@dataclass
class CallContext:
    """What calls need from the registry."""

    bus: EventBus
    scheduler: Callable[[], Any]  # returns the AsrScheduler, or None before the model is loaded
    data_dir: Path
    metrics: Any = None


class MediaSession:
    """One connected media session of a call (the MediaCall an adapter feeds)."""

    def __init__(self, call: "Call", tracks: Sequence[str], source: str):
        self.call = call
        self.tracks: dict[str, None] = dict.fromkeys(tracks)  # an ordered set
        self.source = source
        self.ended = False
        self._odd: dict[str, bytes] = {}

    @property
    def guid(self) -> str:
        return self.call.ref.guid

    async def audio(self, track: str, pcm: np.ndarray, sample_rate: int, timestamp_ms: int | None = None) -> None:
        if self.ended:
            return
        self.call.feed(self, track, pcm, sample_rate, timestamp_ms)

    async def event(self, name: str, data: dict) -> None:
        self.call.protocol_events.append({"name": name, "data": data, "at": time.time()})
        del self.call.protocol_events[:-100]  # keep the latest few for the state view

    async def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = True
            await self.call.end_session(self, reason)


class Call:
    def __init__(self, ref: CallRef, ctx: CallContext):
        self.ref = ref
        self.ctx = ctx
        self.tracks: dict[str, Track] = {}
        self.sessions: list[MediaSession] = []
        self.legs: dict[str, Leg] = {}  # the open interval's legs, by role
        self.last_legs: dict[str, Leg] = {}  # the latest closed leg of each role
        self.unacked: dict[str, Leg] = {}  # legs closed by hang-up that no stop has reported yet
        self.params: StreamParams | None = None
        self.media_state = "pending"  # pending (no media yet) | connected | ended
        self.created_at = utcnow()
        self.ended_at: float | None = None  # monotonic, for retention
        self.pending_since = time.monotonic()  # for calls created before their media (Amazon Connect)
        self.intervals = 0
        self.lock = asyncio.Lock()  # serialises start, stop and hang-up
        self.ending = 0  # media ends being processed
        self.redaction = CallRedaction()
        self.protocol_events: list[dict] = []
        self._seq = 0
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pump = asyncio.create_task(self._run_pump(), name=f"call-{ref.call_id}")

    # -- state -----------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return any(not s.ended for s in self.sessions)

    @property
    def streaming(self) -> bool:
        return bool(self.legs)

    def publish_state(self, state: str, data: dict[str, Any]) -> None:
        self._seq += 1
        self.ctx.bus.publish(CallStateEvent(self.ref, self._seq, state, data))

    # -- media -----------------------------------------------------------------------------------

    def add_session(self, session: MediaSession, metadata: dict | None) -> None:
        for name in session.tracks:
            self._bind_track(session, name)
        self.sessions.append(session)
        self.sessions = [s for s in self.sessions if not s.ended]
        self.media_state = "connected"
        self.ended_at = None
        self.publish_state("media-connected", {"tracks": list(session.tracks), "source": session.source,
                                               "metadata": metadata or {}})

    def live_tracks(self) -> list[str]:
        return [t.name for t in self.tracks.values() if t.session is not None and not t.session.ended]

    def _bind_track(self, session: MediaSession, name: str) -> Track:
        track = self.tracks.get(name)
        if track is None:
            track = self.tracks[name] = Track(name)
        track.session = session
        track.base_ms = track.position_ms  # session timestamps count from here
        session.tracks.setdefault(name)
        if self.params is not None:  # a pending leg (started before its media) attaches now
            role = role_of(self.ref.namespace, name, self.params.roles)
            leg = self.legs.get(role) if role else None
            if leg is not None and leg.track is None:
                self._attach(leg, track)
        return track

    def feed(self, session: MediaSession, name: str, pcm: np.ndarray, rate: int, timestamp_ms: int | None) -> None:
        track = self.tracks.get(name)
        if track is None or track.session is not session:
            if track is not None and track.session is not None and track.session is not session:
                return  # another live session owns this track
            track = self._bind_track(session, name)
        if rate <= 0 or len(pcm) == 0:
            return
        if timestamp_ms is not None:
            gap = track.base_ms + timestamp_ms - track.position_ms
            if gap >= 1:
                fill = min(gap, MAX_GAP_FILL_MS)
                self._ingest(track, np.zeros(int(fill * rate / 1000), dtype=np.int16), rate)
                if gap > fill:  # a jump: the timeline moves on without feeding hours of silence
                    track.position_ms += gap - fill
                    track.received_ms += gap - fill
        self._ingest(track, pcm, rate)

    def _ingest(self, track: Track, pcm: np.ndarray, rate: int) -> None:
        if len(pcm) == 0:
            return
        ms = Fraction(len(pcm) * 1000, rate)
        track.position_ms += ms
        track.received_ms += ms
        if self.ctx.metrics is not None:
            self.ctx.metrics.audio_seconds.labels(self.ref.namespace).inc(float(ms) / 1000)
        leg = track.leg
        if leg is None or not leg.accepting:
            return  # transcription is off: counted above, nothing else
        leg.audio_ms += ms
        if leg.pipeline is not None:
            try:
                leg.pipeline.feed(pcm, rate)
            except Exception:
                log.exception("leg %s: feeding the pipeline failed", leg.stream_id)
        if leg.recorder is not None:
            leg.recorder.write(pcm, rate)

    async def end_session(self, session: MediaSession, reason: str) -> None:
        self.ending += 1  # a start arriving now is told the media is ending (409-203)
        try:
            await self._end_session(session, reason)
        finally:
            self.ending -= 1

    async def _end_session(self, session: MediaSession, reason: str) -> None:
        async with self.lock:
            for name in list(session.tracks):
                track = self.tracks.get(name)
                if track is not None and track.session is session:
                    track.session = None
            if self.live:
                roles = [r for r, leg in self.legs.items() if leg.track is not None and leg.track.session is None]
            else:
                roles = list(self.legs)  # the last media went: close every leg, pending ones too
            if roles:
                closed = await self.close_legs(roles, reason="media-ended")
                self.unacked.update(closed)
            if not self.live and self.media_state != "ended":
                self.media_state = "ended"
                self.ended_at = time.monotonic()
                self.publish_state("media-ended", {"reason": reason})

    # -- streaming intervals -----------------------------------------------------------------------

    def roles_to_open(self, params: StreamParams, roles: Sequence[str] | None) -> dict[str, Track | None]:
        """role -> live track (or None for a leg that waits for its media) for a start."""
        out: dict[str, Track | None] = {}
        for name in self.live_tracks():
            role = role_of(self.ref.namespace, name, params.roles)
            if role is not None and role not in out and (roles is None or role in roles):
                out[role] = self.tracks[name]
        if params.amazon_connect is not None and self.ref.namespace == "amazonconnect":
            for role in ("customer", "agent"):  # the media is pulled after the start
                out.setdefault(role, None)
        return out

    def open_legs(self, params: StreamParams, plan: dict[str, Track | None]) -> dict[str, Leg]:
        scheduler = self.ctx.scheduler()
        wanted = sum(1 for t in plan.values() if t is not None)
        if scheduler is None or (wanted and not scheduler.can_admit(wanted)):
            raise NoCapacity()
        self.params = params
        self.unacked = {}
        opened: dict[str, Leg] = {}
        try:
            for role, track in plan.items():
                leg = Leg(role, params.external_ids.get(role, ""), params)
                if params.audio_recording_allowed:
                    leg.recorder = LegRecorder(self.ctx.data_dir, self.ref.tenant, self.ref.call_id, role, leg.stream_id)
                opened[role] = leg
                if track is not None:
                    self._attach(leg, track)
        except Exception:
            for leg in opened.values():
                leg.stop_clock()
                if leg.pipeline is not None:
                    leg.pipeline.close()
                if leg.track is not None:
                    leg.track.leg = None
            raise
        self.legs.update(opened)
        self.intervals += 1
        if self.ctx.metrics is not None:
            self.ctx.metrics.active_legs.inc(len(opened))
        self.publish_state("streaming-started", {
            "legs": {r: {"stream_id": leg.stream_id, "external_id": leg.external_id,
                         "track": leg.track.name if leg.track else None} for r, leg in opened.items()},
            "params": params.as_dict(),
        })
        return opened

    def _attach(self, leg: Leg, track: Track) -> None:
        """Give a leg its track and a pipeline whose times continue the track's timeline."""
        scheduler = self.ctx.scheduler()
        if scheduler is None:
            raise NoCapacity()
        loop = self._loop

        def on_event(event: TranscriptEvent) -> None:  # called from an engine worker thread
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, (leg, event))
            except RuntimeError:
                pass  # the loop is closing

        leg.pipeline = scheduler.open_leg(on_event, origin_ms=int(track.position_ms), partials=leg.params.partials)
        leg.track = track
        leg.utterance_base = track.next_utterance
        track.leg = leg

    async def close_legs(self, roles: Sequence[str], reason: str) -> dict[str, Leg]:
        """Close these legs' interval: stop taking audio, wait for the last finals, publish the summaries."""
        legs = {r: self.legs[r] for r in roles if r in self.legs}
        for leg in legs.values():
            leg.stop_clock()  # from here audio is counted only; the summary's clock stops now
        waits = []
        for leg in legs.values():
            if leg.pipeline is not None:
                try:
                    waits.append(asyncio.wrap_future(leg.pipeline.close()))
                except Exception:
                    log.exception("leg %s: closing the pipeline failed", leg.stream_id)
        if waits:
            done, pending = await asyncio.wait(waits, timeout=DRAIN_TIMEOUT_S)
            for fut in pending:
                log.error("call %s: a pipeline did not drain in %.0f s", self.ref.call_id, DRAIN_TIMEOUT_S)
                fut.cancel()
            for fut in done:
                if not fut.cancelled() and fut.exception() is not None:
                    log.error("call %s: pipeline close failed: %r", self.ref.call_id, fut.exception())
        await asyncio.sleep(0)  # let the engine's last on_event hops land in the queue
        await self._queue.join()
        for role, leg in legs.items():
            if leg.track is not None and leg.track.leg is leg:
                leg.track.leg = None
            leg.closed = True
            del self.legs[role]
            self.last_legs[role] = leg
        if self.ctx.metrics is not None:
            self.ctx.metrics.active_legs.dec(len(legs))
        self.publish_state("streaming-stopped", {
            "reason": reason,
            "stream_ids": {r: leg.stream_id for r, leg in legs.items()},
            "summaries": {r: {**asdict(leg.summary()), "stream_id": leg.stream_id} for r, leg in legs.items()},
        })
        for role, leg in legs.items():
            if leg.recorder is not None and leg.recorder.close():
                self.publish_state("recording-saved", {
                    "role": role, "stream_id": leg.stream_id, "path": str(leg.recorder.relative_path),
                    "duration_ms": leg.recorder.duration_ms, "sample_rate": leg.recorder.sample_rate})
        return legs

    # -- transcripts -------------------------------------------------------------------------------

    async def _run_pump(self) -> None:
        while True:
            leg, event = await self._queue.get()
            try:
                await self._publish_transcript(leg, event)
            except Exception:
                log.exception("call %s: publishing a transcript failed", self.ref.call_id)
            finally:
                self._queue.task_done()

    async def _publish_transcript(self, leg: Leg, ev: TranscriptEvent) -> None:
        if leg.closed:
            return  # a leftover of an interval that is over
        mode = leg.params.redaction_output
        utterance = leg.utterance_base + ev.utterance
        # Redaction runs inline: about 0.1 ms a final (measured), cheaper than any hop to a thread pool.
        if ev.kind == "final":
            shown = self.redaction.final(ev.text, ev.words, leg.role, mode, leg.params.detailed_token)
            if leg.track is not None:
                leg.track.next_utterance = max(leg.track.next_utterance, utterance + 1)
        else:
            if not leg.active:
                return  # partials after a stop are noise
            shown = self.redaction.partial(ev.text, leg.role, mode)
        if shown is None:
            return
        if ev.kind == "final" and not shown.text.strip():
            # Noise after all: withdraw the partial subscribers were shown (an empty partial), so
            # no live view is left with words that never become a final.
            if leg.partial_shown != utterance:
                return
            ev = TranscriptEvent("partial", ev.utterance, ev.start_ms, ev.end_ms, "")
            shown = Shown("")
        leg.partial_shown = utterance if ev.kind == "partial" and shown.text else None
        if ev.kind == "final":
            leg.transcripts += 1
            if self.ctx.metrics is not None:
                self.ctx.metrics.finals.inc()
        elif self.ctx.metrics is not None:
            self.ctx.metrics.partials.inc()
        self._seq += 1
        self.ctx.bus.publish(UtteranceEvent(
            call=self.ref, seq=self._seq, kind=ev.kind, role=leg.role, external_id=leg.external_id,
            stream_id=leg.stream_id, utterance=utterance, start_ms=ev.start_ms, end_ms=ev.end_ms,
            text=shown.text, unredacted_text=shown.unredacted_text, words=shown.words, redaction_output=mode))

    # -- views -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        legs = {r: leg.snapshot() for r, leg in self.last_legs.items()}
        legs.update({r: leg.snapshot() for r, leg in self.legs.items()})
        return {
            "call_id": self.ref.call_id, "tenant": self.ref.tenant, "namespace": self.ref.namespace,
            "guid": self.ref.guid, "media": self.media_state, "streaming": self.streaming,
            "state": "streaming" if self.streaming else self.media_state,
            "created_at": self.created_at.isoformat(), "intervals": self.intervals, "last_seq": self._seq,
            "tracks": [t.snapshot() for t in self.tracks.values()],
            "legs": [legs[r] for r in sorted(legs)],
            "protocol_events": list(self.protocol_events[-20:]),
        }

    def discard(self) -> None:
        self._pump.cancel()
        for leg in self.legs.values():
            leg.stop_clock()
            if leg.pipeline is not None:
                try:
                    leg.pipeline.close()
                except Exception:
                    log.exception("closing a pipeline of a dropped call failed")
            if leg.recorder is not None:
                leg.recorder.close()
