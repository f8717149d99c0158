"""One call: its media sessions, tracks, streaming intervals and the events it publishes.

Everything here runs on the event loop, except the engine's on_event callbacks, which hop onto the
loop with call_soon_threadsafe. Events go through one queue per call so that every event of a call
gets the next sequence number in the order it is published, and so a stop can wait until the last
final of its interval has been published. Legs are keyed by participant id: a call may have any
number of participants, each on its own track.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from callscribe.asr.types import TranscriptEvent
from callscribe.calls.events import CallRef, CallStateEvent, EventBus, UtteranceEvent, utcnow
from callscribe.calls.leg import Leg, StreamParams, Track
from callscribe.calls.media import Participant, PulledSource, TrackSpec
from callscribe.calls.recording import LegRecorder
from callscribe.calls.redaction import CallRedaction, Shown

if TYPE_CHECKING:
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.metrics import Metrics

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 120.0  # how long a stop waits for the engine's last finals


class NoCapacity(Exception):
    """The speech scheduler cannot take the legs a start asks for."""


@dataclass
class CallContext:
    """What calls need from the registry."""

    bus: EventBus
    scheduler: Callable[[], "AsrScheduler | None"]  # None before the model is loaded
    data_dir: Path
    metrics: "Metrics | None" = None


class MediaSession:
    """One connected media session of a call (the MediaCall an adapter feeds)."""

    def __init__(self, call: "Call", tracks: Sequence[TrackSpec], source: str):
        self.call = call
        self.tracks: dict[str, TrackSpec] = {t.name: t for t in tracks}  # ordered
        self.source = source
        self.ended = False

    @property
    def guid(self) -> str:
        return self.call.ref.guid

    async def audio(self, track: str, pcm: np.ndarray, sample_rate: int, timestamp_ms: int | None = None) -> None:
        if self.ended:
            return
        self.call.feed(self, track, pcm, sample_rate, timestamp_ms)

    async def event(self, name: str, data: dict[str, Any]) -> None:
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
        self.sources: list[PulledSource] = []  # pulls that feed this call, stopped with it
        self.legs: dict[str, Leg] = {}  # the open interval's legs, by participant id
        self.last_legs: dict[str, Leg] = {}  # the latest closed leg of each participant
        self.unacked: dict[str, Leg] = {}  # legs closed by hang-up that no stop has reported yet
        self.params: StreamParams | None = None
        self.selected: set[str] | None = None  # participants the open interval covers (None: all)
        self.media_state = "pending"  # pending (no media yet) | connected | ended
        self.created_at = utcnow()
        self.ended_at: float | None = None  # monotonic, for retention
        self.pending_since = time.monotonic()
        self.intervals = 0
        self.lock = asyncio.Lock()  # serialises start, stop and hang-up
        self.ending = 0  # media ends being processed
        self.redaction = CallRedaction()
        self.protocol_events: list[dict[str, Any]] = []
        self._seq = 0
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Leg, TranscriptEvent]] = asyncio.Queue()
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

    def add_session(self, session: MediaSession, metadata: dict[str, Any] | None) -> None:
        for spec in session.tracks.values():
            self._bind_track(session, spec)
        self.sessions.append(session)
        self.sessions = [s for s in self.sessions if not s.ended]
        self.media_state = "connected"
        self.ended_at = None
        self.publish_state("media-connected", {
            "tracks": list(session.tracks), "source": session.source, "metadata": metadata or {},
            "participants": {name: p.id for name in session.tracks if (p := self.tracks[name].participant)}})
        self._join_open_interval(session)

    def live_tracks(self) -> list[str]:
        return [t.name for t in self.tracks.values() if t.session is not None and not t.session.ended]

    def _bind_track(self, session: MediaSession, spec: TrackSpec) -> Track:
        track = self.tracks.get(spec.name)
        if track is None:
            track = self.tracks[spec.name] = Track(spec.name, spec.participant)
        elif spec.participant is not None:
            track.participant = spec.participant
        track.session = session
        track.base_ms = track.position_ms  # session timestamps count from here
        return track

    def _join_open_interval(self, session: MediaSession) -> None:
        """Tracks that connect while transcription is on join the open interval (a participant who
        joins a meeting late, a leg whose media reconnected)."""
        if self.params is None or not self.legs:
            return
        plan = self.plan(self.params, None, only=list(session.tracks))
        for pid, (participant, track) in plan.items():
            if pid in self.legs:
                current = self.legs[pid].track
                if current is None or current.session is None:
                    self._attach(self.legs[pid], track)
                continue
            if self.selected is not None and pid not in self.selected:
                continue
            try:
                self._open({pid: (participant, track)}, self.params)
            except NoCapacity:
                log.warning("call %s: no capacity for participant %s who joined", self.ref.call_id, pid)

    def feed(self, session: MediaSession, name: str, pcm: np.ndarray, rate: int, timestamp_ms: int | None) -> None:
        track = self.tracks.get(name)
        if track is None or track.session is not session:
            if track is not None and track.session is not None and track.session is not session:
                return  # another live session owns this track
            if name not in session.tracks:
                session.tracks[name] = TrackSpec(name)
            track = self._bind_track(session, session.tracks[name])
        if rate <= 0 or len(pcm) == 0:
            return
        if timestamp_ms is not None:
            gap = track.base_ms + timestamp_ms - track.position_ms
            if gap >= 1:  # the timeline skips the gap; nothing is made up to fill it
                track.position_ms += gap
                leg = track.leg
                if leg is not None and leg.accepting and leg.pipeline is not None:
                    leg.pipeline.gap(int(gap))
        self._ingest(track, pcm, rate)

    def _ingest(self, track: Track, pcm: np.ndarray, rate: int) -> None:
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
                ids = [p for p, leg in self.legs.items() if leg.track is None or leg.track.session is None]
            else:
                ids = list(self.legs)  # the last media went: close every leg
            if ids:
                closed = await self.close_legs(ids, reason="media-ended")
                self.unacked.update(closed)
            if not self.live and self.media_state != "ended":
                self.media_state = "ended"
                self.ended_at = time.monotonic()
                self.publish_state("media-ended", {"reason": reason})

    # -- streaming intervals -----------------------------------------------------------------------

    def plan(self, params: StreamParams, participants: Sequence[str] | None, *,
             only: Sequence[str] | None = None) -> dict[str, tuple[Participant, Track]]:
        """participant id -> (participant, live track) for a start (of these participants, or all)."""
        out: dict[str, tuple[Participant, Track]] = {}
        for name in self.live_tracks():
            if only is not None and name not in only:
                continue
            track = self.tracks[name]
            p = params.participant_of(track)
            if p.id not in out and (participants is None or p.id in participants):
                out[p.id] = (p, track)
        return out

    def open_legs(self, params: StreamParams, plan: dict[str, tuple[Participant, Track]],
                  participants: Sequence[str] | None) -> dict[str, Leg]:
        scheduler = self.ctx.scheduler()
        if scheduler is None or (plan and not scheduler.can_admit(len(plan))):
            raise NoCapacity()
        self.params = params
        self.unacked = {}
        if participants is None:
            self.selected = None
        elif self.legs and self.selected is not None:
            self.selected |= set(participants)
        else:
            self.selected = set(participants)
        opened = self._open(plan, params)
        self.intervals += 1
        return opened

    def _open(self, plan: dict[str, tuple[Participant, Track]], params: StreamParams) -> dict[str, Leg]:
        opened: dict[str, Leg] = {}
        try:
            for pid, (participant, track) in plan.items():
                leg = Leg(participant, params)
                if params.audio_recording_allowed:
                    leg.recorder = LegRecorder(self.ctx.data_dir, self.ref.tenant, self.ref.call_id, pid, leg.stream_id)
                opened[pid] = leg
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
        if self.ctx.metrics is not None:
            self.ctx.metrics.active_legs.inc(len(opened))
        self.publish_state("streaming-started", {
            "legs": {pid: leg.describe() for pid, leg in opened.items()}, "params": params.as_dict()})
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

        own = {"endpoint_silence_ms": leg.params.endpoint_silence_ms} if leg.params.endpoint_silence_ms else {}
        leg.pipeline = scheduler.open_leg(on_event, origin_ms=int(track.position_ms), partials=leg.params.partials,
                                          **own)
        leg.track = track
        leg.utterance_base = track.next_utterance
        track.leg = leg

    async def close_legs(self, ids: Sequence[str], reason: str) -> dict[str, Leg]:
        """Close these legs' interval: stop taking audio, wait for the last finals, publish the summaries."""
        legs = {p: self.legs[p] for p in ids if p in self.legs}
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
        for pid, leg in legs.items():
            if leg.track is not None and leg.track.leg is leg:
                leg.track.leg = None
            leg.closed = True
            del self.legs[pid]
            self.last_legs[pid] = leg
        if self.selected is not None:
            self.selected -= set(legs)
        if self.ctx.metrics is not None:
            self.ctx.metrics.active_legs.dec(len(legs))
        self.publish_state("streaming-stopped", {
            "reason": reason,
            "stream_ids": {p: leg.stream_id for p, leg in legs.items()},
            "summaries": {p: {**leg.summary().as_dict(), "stream_id": leg.stream_id, "role": leg.role}
                          for p, leg in legs.items()},
        })
        for pid, leg in legs.items():
            if leg.recorder is not None and leg.recorder.close():
                self.publish_state("recording-saved", {
                    "participant": pid, "role": leg.role, "stream_id": leg.stream_id,
                    "path": str(leg.recorder.relative_path), "duration_ms": leg.recorder.duration_ms,
                    "sample_rate": leg.recorder.sample_rate})
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
            shown = self.redaction.final(ev.text, ev.words, leg.id, mode, leg.params.detailed_token,
                                         leg.params.redaction_policy)
            if leg.track is not None:
                leg.track.next_utterance = max(leg.track.next_utterance, utterance + 1)
        else:
            if not leg.active:
                return  # partials after a stop are noise
            shown = self.redaction.partial(ev.text, leg.id, mode, leg.params.redaction_policy)
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
            text=shown.text, unredacted_text=shown.unredacted_text, words=shown.words, redaction_output=mode,
            participant=leg.id, participant_name=leg.participant.name, surface=leg.params.surface))

    # -- views -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        legs = {p: leg.snapshot() for p, leg in self.last_legs.items()}
        legs.update({p: leg.snapshot() for p, leg in self.legs.items()})
        return {
            "call_id": self.ref.call_id, "tenant": self.ref.tenant, "namespace": self.ref.namespace,
            "guid": self.ref.guid, "media": self.media_state, "streaming": self.streaming,
            "state": "streaming" if self.streaming else self.media_state,
            "created_at": self.created_at.isoformat(), "intervals": self.intervals, "last_seq": self._seq,
            "tracks": [t.snapshot() for t in self.tracks.values()],
            "legs": [legs[p] for p in sorted(legs)],
            "protocol_events": list(self.protocol_events[-20:]),
        }

    async def stop_sources(self) -> None:
        sources, self.sources = self.sources, []
        for source in sources:
            await _stop_source(source)

    def discard(self) -> None:
        self._pump.cancel()
        for source in self.sources:
            asyncio.create_task(_stop_source(source))
        self.sources = []
        for leg in self.legs.values():
            leg.stop_clock()
            if leg.pipeline is not None:
                try:
                    leg.pipeline.close()
                except Exception:
                    log.exception("closing a pipeline of a dropped call failed")
            if leg.recorder is not None:
                leg.recorder.close()


async def _stop_source(source: PulledSource) -> None:
    try:
        await source.stop()
    except Exception:
        log.exception("stopping a pulled source failed")
