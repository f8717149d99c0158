"""One call: its media sessions, tracks, streaming intervals and the events it publishes.

Everything here runs on the event loop. What the call publishes (state changes, and transcripts
redacted on their way out) goes through its CallEvents (calls/transcripts.py). Legs are keyed by
participant id: a call may have any number of participants, each on its own track.
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

from callscribe.calls.events import CallRef, EventBus, utcnow
from callscribe.calls.leg import Leg, StreamParams, Track
from callscribe.calls.media import Participant, PulledSource, TrackSpec
from callscribe.calls.recording import LegRecorder
from callscribe.calls.transcripts import CallEvents

if TYPE_CHECKING:
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.metrics import Metrics

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 120.0  # how long a stop waits for the engine's last finals
PACE_BACKLOG_MS = 10_000  # a leg's audio not yet through the front end beyond which its sender waits
PACE_POLL_S = 0.05
SHORT_GAP_MS = 100  # a gap up to this (and the frame after it) is a lost packet, bridged with silence


class NoCapacity(Exception):
    """The speech scheduler cannot take the legs a start asks for."""


@dataclass
class CallContext:
    """What calls need from the registry."""

    bus: EventBus
    scheduler: Callable[[], "AsrScheduler | None"]  # None before the model is loaded
    data_dir: Path
    metrics: "Metrics | None" = None
    max_recording_s: float = 4 * 3600.0


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
        leg = self.call.feed(self, track, pcm, sample_rate, timestamp_ms)
        # Pacing: a sender far ahead of real time waits here (its socket is not read meanwhile, so
        # the wait reaches it as TCP back-pressure) instead of queueing audio the engine would drop.
        while leg is not None and leg.pipeline is not None and leg.accepting and \
                leg.pipeline.backlog_ms > PACE_BACKLOG_MS and not self.ended:
            await asyncio.sleep(PACE_POLL_S)

    async def event(self, name: str, data: dict[str, Any]) -> None:
        self.call.protocol_event(name, data)

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
        # Who joins the open interval when their media connects: everyone (after a start for all
        # participants) but those stopped one by one; nobody after starts that named participants.
        self.auto_join = False
        self.excluded: set[str] = set()
        self._joins: set[asyncio.Task[None]] = set()
        self.media_state = "pending"  # pending (no media yet) | connected | ended
        self.created_at = utcnow()
        self.ended_at: float | None = None  # monotonic, for retention
        self.pending_since = time.monotonic()
        self.intervals = 0
        self.lock = asyncio.Lock()  # serialises start, stop and hang-up
        self.ending = 0  # media ends being processed
        self.protocol_events: list[dict[str, Any]] = []
        self.events = CallEvents(ref, ctx.bus, ctx.metrics)

    # -- state -----------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return any(not s.ended for s in self.sessions)

    @property
    def streaming(self) -> bool:
        return bool(self.legs)

    def publish_state(self, state: str, data: dict[str, Any]) -> None:
        self.events.state(state, data, self.params.surface if self.params is not None else "")

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
        if self.auto_join and self.legs:
            # Under the call's lock, so a start, stop or hang-up in progress finishes first.
            task = asyncio.create_task(self._join_open_interval(session), name=f"join-{self.ref.call_id}")
            self._joins.add(task)
            task.add_done_callback(self._joins.discard)

    def protocol_event(self, name: str, data: dict[str, Any]) -> None:
        """Keep the latest few protocol events for the state view. Keyed digits are as sensitive as
        spoken ones (a card number typed on the keypad): masked unless the call is unredacted."""
        if name == "dtmf" and (self.params is None or self.params.redaction_output != "unredacted"):
            data = {**data, "digit": "#"}
        self.protocol_events.append({"name": name, "data": data, "at": time.time()})
        del self.protocol_events[:-100]

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

    async def _join_open_interval(self, session: MediaSession) -> None:
        """Tracks that connect while transcription is on for everyone join the open interval (a
        participant who joins a meeting late, a leg whose media reconnected), within capacity."""
        try:
            async with self.lock:
                if session.ended or self.params is None or not self.legs or not self.auto_join:
                    return
                plan = {pid: entry for pid, entry in self.plan(self.params, None, only=list(session.tracks)).items()
                        if pid not in self.legs and pid not in self.excluded}
                if plan and not self._admits(plan):
                    log.warning("call %s: no capacity for %s, who joined", self.ref.call_id, ", ".join(plan))
                    if self.ctx.metrics is not None:
                        self.ctx.metrics.refused.inc()
                    return
                if plan:
                    self._open(plan, self.params)
        except Exception:  # the media goes on untranscribed; the adapter's session is unaffected
            log.exception("call %s: joining the open interval failed", self.ref.call_id)

    async def joined(self) -> None:
        """Return once the joins of media connected so far are settled."""
        while self._joins:
            await asyncio.gather(*list(self._joins), return_exceptions=True)

    def feed(self, session: MediaSession, name: str, pcm: np.ndarray, rate: int,
             timestamp_ms: int | None) -> Leg | None:
        """Count (and, while transcription is on, transcribe) a frame; the leg it went to, if any."""
        track = self.tracks.get(name)
        if track is None or track.session is not session:
            if track is not None and track.session is not None and track.session is not session:
                return None  # another live session owns this track
            if name not in session.tracks:
                session.tracks[name] = TrackSpec(name)
            track = self._bind_track(session, session.tracks[name])
        if rate <= 0 or len(pcm) == 0:
            return None
        if timestamp_ms is not None:
            gap = track.base_ms + timestamp_ms - track.position_ms
            if gap >= 1:
                self._skip(track, gap, Fraction(len(pcm) * 1000, rate), rate)
        self._ingest(track, pcm, rate)
        return track.leg

    def _skip(self, track: Track, gap: Fraction, frame_ms: Fraction, rate: int) -> None:
        """A gap in a track's media. A lost packet or two (no longer than the frame that follows, so
        a peer cannot multiply what it sends) is bridged with silence, so the utterance it fell in
        carries on; a longer gap moves the timeline on and ends any utterance in progress, with
        nothing made up for it."""
        track.position_ms += gap
        leg = track.leg
        if leg is None or not leg.accepting:
            return
        if gap <= min(frame_ms, Fraction(SHORT_GAP_MS)):
            silence = np.zeros(int(gap * rate / 1000), dtype=np.int16)
            if leg.pipeline is not None:
                leg.pipeline.feed(silence, rate)
            if leg.recorder is not None:
                leg.recorder.write(silence, rate)
        elif leg.pipeline is not None:
            leg.pipeline.gap(int(gap))

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
        if not self._admits(plan):
            raise NoCapacity()
        self.params = params
        self.unacked = {}
        if participants is None:
            self.auto_join, self.excluded = True, set()
        elif self.legs:
            self.excluded -= set(participants)  # a restart of some within an interval for everyone
        else:
            self.auto_join = False
        opened = self._open(plan, params)
        self.intervals += 1
        return opened

    def _admits(self, plan: dict[str, tuple[Participant, Track]]) -> bool:
        """Whether the engine takes these legs. A participant this call already transcribed keeps its
        place: a resume after a pause, a Finalize that restarts the interval or media that reconnects
        is not new load, and refusing it would cut the call."""
        scheduler = self.ctx.scheduler()
        new = [pid for pid in plan if pid not in self.last_legs]
        return scheduler is not None and (not new or scheduler.can_admit(len(new)))

    def _open(self, plan: dict[str, tuple[Participant, Track]], params: StreamParams) -> dict[str, Leg]:
        opened: dict[str, Leg] = {}
        try:
            for pid, (participant, track) in plan.items():
                leg = Leg(participant, params)
                if params.audio_recording_allowed:
                    leg.recorder = LegRecorder(self.ctx.data_dir, self.ref.tenant, self.ref.call_id, pid, leg.stream_id,
                                               max_seconds=self.ctx.max_recording_s)
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
        own = {"endpoint_silence_ms": leg.params.endpoint_silence_ms} if leg.params.endpoint_silence_ms else {}
        leg.pipeline = scheduler.open_leg(self.events.receiver(leg), origin_ms=int(track.position_ms),
                                          partials=leg.params.partials, on_settled=self.events.settled_receiver(leg),
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
        await self.events.drain()
        for pid, leg in legs.items():
            if leg.track is not None and leg.track.leg is leg:
                leg.track.leg = None
            leg.closed = True
            # Its engine state (VAD, resampler: about 0.5 MB) goes now, not with the call's retention.
            leg.pipeline = None
            del self.legs[pid]
            self.last_legs[pid] = leg
        if self.legs and reason == "stop":
            self.excluded |= set(legs)  # stopped one by one: they do not rejoin on reconnect
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
                    "sample_rate": leg.recorder.sample_rate, "end_reason": leg.recorder.end_reason or "stop"})
        return legs

    # -- views -------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        legs = {p: leg.snapshot() for p, leg in self.last_legs.items()}
        legs.update({p: leg.snapshot() for p, leg in self.legs.items()})
        return {
            "call_id": self.ref.call_id, "tenant": self.ref.tenant, "namespace": self.ref.namespace,
            "guid": self.ref.guid, "media": self.media_state, "streaming": self.streaming,
            "state": "streaming" if self.streaming else self.media_state,
            "created_at": self.created_at.isoformat(), "intervals": self.intervals, "last_seq": self.events.seq,
            "tracks": [t.snapshot() for t in self.tracks.values()],
            "legs": [legs[p] for p in sorted(legs)],
            "protocol_events": list(self.protocol_events[-20:]),
        }

    async def stop_sources(self) -> None:
        sources, self.sources = self.sources, []
        for source in sources:
            await _stop_source(source)

    async def stop_source(self, source: PulledSource) -> None:
        if source in self.sources:
            self.sources.remove(source)
        await _stop_source(source)

    def discard(self) -> None:
        """Drop the call (it outlived its retention). Pulls still running are stopped in the background."""
        self.events.close()
        for join in self._joins:
            join.cancel()
        if self.sources:
            task = asyncio.create_task(self.stop_sources(), name=f"stop-sources-{self.ref.call_id}")
            _background.add(task)
            task.add_done_callback(_background.discard)
        for leg in self.legs.values():
            leg.stop_clock()
            if leg.pipeline is not None:
                try:
                    leg.pipeline.close()
                except Exception:
                    log.exception("closing a pipeline of a dropped call failed")
            if leg.recorder is not None:
                leg.recorder.close()


_background: set[asyncio.Task[None]] = set()  # kept referenced until done


async def _stop_source(source: PulledSource) -> None:
    try:
        await source.stop()
    except Exception:
        log.exception("stopping a pulled source failed")
