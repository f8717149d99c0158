"""One leg's streaming pipeline: PCM frames in, ordered partial/final transcript events out.

`feed` and `gap` only queue the input (bounded, per leg) and return; the process's front-end worker
(frontend.py) resamples it to 16 kHz with soxr, runs the VAD and cuts utterances, and hands utterance
audio to the scheduler; the model never runs on the caller's thread. Results come back on an engine
thread (a scheduler worker; the front end when a final takes a speculative result, scheduler.py) and
are released here in order: finals in utterance order, a partial only while no
final of its utterance or a later one is pending, and nothing after `close()`'s future.

Fairness: a leg with `max_queued_finals` finals waiting for the model is paced (its input waits in its
queue), every final carries the real-time due time of its end of speech (realtime.py) so a leg that
sends faster than real time cannot push other legs' finals back, and `overrun` tells the edge that a
leg is ahead of real time by more than the burst allowance.
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from callscribe.asr.realtime import RealTimeGuard
from callscribe.asr.segmenter import FRAME, RATE, Cut, Segmenter, SegmenterConfig
from callscribe.asr.types import TranscriptEvent, Word
from callscribe.asr.vad import VadStream
from callscribe.audio.resample import StreamResampler

if TYPE_CHECKING:
    from callscribe.asr.engine import Hypothesis
    from callscribe.asr.scheduler import AsrScheduler, Job

log = logging.getLogger(__name__)

MAX_QUEUED_FINALS = 4  # per leg; beyond it the leg's input waits (it is seconds behind already)
MAX_INPUT_MS = 30000  # per leg; audio beyond it is dropped (kept on the timeline as a gap)
PIECE_S = 1  # a frame is queued in pieces of at most this many seconds (a turn's worth)
SETTLED_STEP_MS = 1000  # how far a leg's settled mark moves before it is reported again


@dataclass
class _Input:
    kind: str  # "audio" | "gap" | "close"
    ms: float  # media time it covers
    end_ms: float  # the leg's position after it (from the leg's start, without origin_ms)
    due: float  # scheduler-clock time at which its end was due in real time
    pcm: np.ndarray | None = None
    rate: int = 0


class LegPipeline:
    """Created by `AsrScheduler.open_leg`. `feed`, `gap` and `close` are thread-safe and never block
    unless asked to (`feed(..., block=True)`, for offline callers that want backpressure)."""

    def __init__(self, scheduler: "AsrScheduler", on_event: Callable[[TranscriptEvent], None], *,
                 origin_ms: int = 0, config: SegmenterConfig,
                 max_queued_finals: int = MAX_QUEUED_FINALS, max_input_ms: int = MAX_INPUT_MS,
                 on_settled: Callable[[int], None] | None = None) -> None:
        self._scheduler = scheduler
        self._on_event = on_event
        # Told (after every final before it) the leg time up to which its transcript is complete:
        # consumers that cut the timeline into fixed segments close them through silences with it.
        self._on_settled = on_settled
        self._settled_ms = origin_ms
        self.origin_ms = origin_ms
        self.partials_enabled = config.partials
        self.max_queued_finals = max_queued_finals
        self.max_input_ms = max_input_ms
        # Input side (guarded by _lock): what callers queued and the front end has not taken yet.
        self._lock = threading.Condition()
        self._input: collections.deque[_Input] = collections.deque()
        self._input_ms = 0.0
        self._fed_ms = 0.0
        self._dropped_ms = 0.0
        self._closed = False
        self._guard = RealTimeGuard(clock=scheduler.clock)
        # Front-end side (guarded by _proc_lock; the front-end worker's own state).
        self._proc_lock = threading.Lock()
        self._seg = Segmenter(config)
        self._vad = VadStream()
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # resampled audio not yet a whole VAD frame
        self._input_done = False  # the close marker has been processed
        self._paced = False  # the front end stopped taking input until a final is out (under _emit_lock)
        # Emission state (guarded by _emit_lock; touched by scheduler workers).
        self._emit_lock = threading.RLock()  # re-entrant: on_event may feed or close its own leg
        self._finals_submitted = 0
        self._finals_done = 0
        self._last_final_segment = -1
        self._done: dict[int, tuple["Job", "Hypothesis | None"]] = {}
        self._utterance_of: dict[int, int] = {}
        self._next_utterance = 0
        self._last_partial_end = -1
        self._close_future: Future | None = None
        self._finished = False

    @property
    def position_ms(self) -> int:
        """ms of audio (and gaps) fed so far, plus origin_ms."""
        return self.origin_ms + int(self._fed_ms)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overrun(self) -> bool:
        """True while the leg's media arrives ahead of real time by more than the burst allowance
        (see realtime.py); the edge should tell the sender (ASAPP 4083, a Twilio close code)."""
        return self._guard.overrun

    @property
    def ahead_s(self) -> float:
        """How far ahead of real time the leg's media was at its last frame."""
        return self._guard.ahead_s

    @property
    def backlog_ms(self) -> float:
        """Media queued for the front end and not processed yet."""
        return self._input_ms

    @property
    def dropped_ms(self) -> float:
        """Media dropped because the leg's input queue was full (kept on the timeline as gaps)."""
        return self._dropped_ms

    # -- input (any thread) -----------------------------------------------------------------------

    def feed(self, pcm: np.ndarray, sample_rate: int, *, block: bool = False) -> None:
        """Queue mono int16 samples at any rate. Never blocks unless `block`: then it waits while the
        leg's input queue is full instead of dropping audio (offline callers)."""
        pcm = np.asarray(pcm).reshape(-1)
        if pcm.size == 0:
            return
        if sample_rate <= 0:
            raise ValueError(f"bad sample rate {sample_rate}")
        step = sample_rate * PIECE_S
        with self._lock:
            for at in range(0, pcm.size, step):
                if self._closed:
                    return
                piece = pcm[at:at + step].copy()  # the caller may reuse its buffer before the front end runs
                ms = piece.size * 1000.0 / sample_rate
                while block and self._input_ms + ms > self.max_input_ms and self._input and not self._closed:
                    self._lock.wait(1.0)
                self._fed_ms += ms
                due = self._guard.advance(ms / 1000)
                if self._input_ms + ms > self.max_input_ms:
                    self._drop(ms, due)
                else:
                    self._input.append(_Input("audio", ms, self._fed_ms, due, piece, sample_rate))
                    self._input_ms += ms
        self._scheduler.front_end.wake(self)

    def gap(self, ms: int) -> None:
        """A discontinuity of `ms` without audio (lost or skipped media): the utterance in progress
        ends, and the times of later words continue after the gap."""
        if ms <= 0:
            return
        with self._lock:
            if self._closed:
                return
            self._fed_ms += ms
            self._queue_gap(ms, self._guard.advance(ms / 1000))
        self._scheduler.front_end.wake(self)

    def _queue_gap(self, ms: float, due: float) -> None:
        last = self._input[-1] if self._input else None
        if last is not None and last.kind == "gap":
            last.ms += ms
            last.end_ms, last.due = self._fed_ms, due
        else:
            self._input.append(_Input("gap", ms, self._fed_ms, due))

    def _drop(self, ms: float, due: float) -> None:
        if not self._dropped_ms:
            log.warning("leg input queue full (%.0f s of audio): dropping audio; the sender is too fast "
                        "or the server overloaded", self._input_ms / 1000)
        self._dropped_ms += ms
        self._scheduler._audio_dropped(ms / 1000)
        self._queue_gap(ms, due)

    def close(self) -> Future:
        """Force the endpoint at the end of the input fed so far. The future completes once the last
        final has been passed to on_event; no events follow it."""
        with self._lock:
            if self._close_future is not None:
                return self._close_future
            self._closed = True
            future: Future = Future()
            self._close_future = future
            self._input.append(_Input("close", 0.0, self._fed_ms, self._guard.advance(0.0)))
            self._lock.notify_all()
        self._scheduler._leg_closed(self)
        self._scheduler.front_end.wake(self)
        return future

    # -- front end (the front-end worker thread) --------------------------------------------------

    def _front_end_turn(self, budget_ms: float) -> bool:
        with self._proc_lock:
            more = self._turn(budget_ms)
            if self._on_settled is not None:
                self._report_settled()
            return more

    def _report_settled(self) -> None:
        """Under `_proc_lock`. Only with no final in flight: the mark then follows, on the same
        ordered path, every final that ends before it."""
        sample = self._seg.settled_sample()
        if sample is None or self._closed:
            return
        ms = self.origin_ms + sample * 1000 // RATE
        with self._emit_lock:
            if self._finals_submitted != self._finals_done or ms - self._settled_ms < SETTLED_STEP_MS:
                return
            self._settled_ms = ms
            assert self._on_settled is not None
            try:
                self._on_settled(ms)
            except Exception:
                log.exception("a settled mark's receiver failed")

    def _turn(self, budget_ms: float) -> bool:
        while budget_ms > 0:
            with self._emit_lock:
                if self._finals_submitted - self._finals_done >= self.max_queued_finals:
                    self._paced = True  # _deliver_final wakes the leg when a final is out
                    return False
            with self._lock:
                if not self._input:
                    return False
                item = self._input.popleft()
                if item.kind == "audio":
                    item = self._coalesce(item, budget_ms)
                    self._input_ms -= item.ms
                self._lock.notify_all()
            budget_ms -= item.ms if item.kind == "audio" else 1.0
            if item.kind == "audio":
                self._audio(item)
            elif item.kind == "gap":
                self._gap(item)
            else:
                self._finish_input(item)
        with self._lock:
            return bool(self._input)

    def _coalesce(self, item: _Input, budget_ms: float) -> _Input:
        """Join the queued audio that follows `item` at its rate (within the turn's budget) into one
        input: a peer's 20 ms frames then cost one resampler call and one VAD batch per turn
        instead of one each. Under `_lock`."""
        if not self._input or self._input[0].kind != "audio" or self._input[0].rate != item.rate:
            return item
        parts, ms, last = [item], item.ms, item
        while self._input and ms < budget_ms:
            nxt = self._input[0]
            if nxt.kind != "audio" or nxt.rate != item.rate:
                break
            self._input.popleft()
            parts.append(nxt)
            ms += nxt.ms
            last = nxt
        pcm = np.concatenate([p.pcm for p in parts if p.pcm is not None])
        # The last piece's end and due time: the cut times of _submit count back from them.
        return _Input("audio", ms, last.end_ms, last.due, pcm, item.rate)

    def _audio(self, item: _Input) -> None:
        assert item.pcm is not None
        if self._resampler is None or self._resampler.rate_in != item.rate:
            if self._resampler is not None:
                self._consume(self._resampler.flush(), item)
            self._resampler = StreamResampler(item.rate)
        self._consume(self._resampler.process(item.pcm), item)

    def _drain_front(self, item: _Input) -> None:
        """Push everything buffered (resampler tail, the last partial frame padded with silence)."""
        if self._resampler is not None:
            self._consume(self._resampler.flush(), item)
            self._resampler = None
        if self._pending.size:
            self._consume(np.zeros(FRAME - self._pending.size, dtype=np.float32), item)

    def _gap(self, item: _Input) -> None:
        self._drain_front(item)
        self._vad.reset()
        self._submit(self._seg.jump(round(item.end_ms * RATE / 1000)), item)

    def _finish_input(self, item: _Input) -> None:
        self._drain_front(item)
        self._submit(self._seg.flush(), item)
        with self._emit_lock:
            self._input_done = True
            self._maybe_finish()

    def _consume(self, audio: np.ndarray, item: _Input) -> None:
        if audio.size == 0:
            return
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        n = (audio.size // FRAME) * FRAME
        self._pending = audio[n:].copy()
        if n == 0:
            return
        frames = audio[:n]
        probs = self._vad.process(frames)
        self._submit(self._seg.push(frames, probs), item)

    def _submit(self, cuts: list[Cut], item: _Input) -> None:
        for cut in cuts:
            # When this cut's moment was due in real time: the input's due time, less the media after it.
            at = item.due - max(0.0, item.end_ms - cut.at_sample * 1000 / RATE) / 1000
            if cut.kind == "final":
                with self._emit_lock:
                    ordinal = self._finals_submitted
                    self._finals_submitted += 1
                    self._last_final_segment = cut.segment
                self._scheduler._submit_final(self, cut, ordinal, speech_end=at - cut.trailing_silence_s)
            elif cut.kind == "speculative":
                if not self._closed:
                    self._scheduler._submit_speculative(self, cut)
            elif self.partials_enabled and not self._closed:
                self._scheduler._submit_partial(self, cut)

    # -- output (scheduler workers; the front end for a final that takes a speculative result) -----

    def showed_partial(self, segment: int) -> bool:
        """Whether a partial of this segment has been emitted already."""
        return segment in self._utterance_of

    def partial_wanted(self, segment: int) -> bool:
        """False once a final for this segment (or a later one) exists or the leg is closing."""
        return not self._closed and segment > self._last_final_segment

    def _deliver_final(self, job: "Job", hyp: "Hypothesis | None") -> None:
        with self._emit_lock:
            self._done[job.ordinal] = (job, hyp)
            while self._finals_done in self._done:
                j, h = self._done.pop(self._finals_done)
                self._finals_done += 1
                self._emit_final(j, h)
            self._maybe_finish()
            resume = self._paced and self._finals_submitted - self._finals_done < self.max_queued_finals
            if resume:
                self._paced = False
        if resume:
            self._scheduler.front_end.wake(self)

    def _deliver_partial(self, job: "Job", hyp: "Hypothesis") -> bool:
        """Emit a partial if it is still current; returns whether it was emitted."""
        with self._emit_lock:
            if (self._finished or self._closed or job.cut.segment <= self._last_final_segment
                    or self._finals_done != self._finals_submitted):
                return False
            end = job.cut.start_sample + len(job.cut.audio)
            if end <= self._last_partial_end or not hyp.text:
                return False
            self._last_partial_end = end
            event = TranscriptEvent("partial", self._utterance(job.cut.segment), *self._span(job.cut, hyp), hyp.text)
            self._call(event)
            return True

    def _emit_final(self, job: "Job", hyp: "Hypothesis | None") -> None:
        seg = job.cut.segment
        text = hyp.text if hyp is not None else ""
        if not text and seg not in self._utterance_of:
            return  # nothing was heard and no partial needs closing
        self._scheduler._final_emitted(job)
        start, end = self._span(job.cut, hyp)
        base = self.origin_ms + job.cut.start_sample * 1000 // 16000
        words = tuple(Word(w.text, base + int(w.start_s * 1000), base + int(w.end_s * 1000), round(w.probability, 4))
                      for w in (hyp.words if hyp is not None and text else []))
        self._call(TranscriptEvent("final", self._utterance(seg), start, end, text, words))

    def _span(self, cut: Cut, hyp: "Hypothesis | None") -> tuple[int, int]:
        base = self.origin_ms + cut.start_sample * 1000 // 16000
        start, end = base, base + len(cut.audio) * 1000 // 16000
        if hyp is not None and hyp.words:  # tighter than the VAD bounds, which include pre-roll and tail
            start = max(start, base + int(hyp.words[0].start_s * 1000))
            end = max(start, min(end, base + int(hyp.words[-1].end_s * 1000)))
        return start, end

    def _utterance(self, segment: int) -> int:
        if segment not in self._utterance_of:
            self._utterance_of[segment] = self._next_utterance
            self._next_utterance += 1
        return self._utterance_of[segment]

    def _call(self, event: TranscriptEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a consumer's bug must not stop the scheduler
            log.exception("on_event failed")

    def _maybe_finish(self) -> None:
        if (self._close_future is not None and self._input_done and not self._finished
                and self._finals_done == self._finals_submitted):
            self._finished = True
            self._close_future.set_result(None)

    def _abandon(self) -> None:
        """The scheduler stopped with finals of this leg undecoded: release close() waiters."""
        with self._emit_lock:
            if self._close_future is not None and not self._finished:
                self._finished = True
                self._close_future.set_result(None)
