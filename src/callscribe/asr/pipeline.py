"""One leg's streaming pipeline: PCM frames in, ordered partial/final transcript events out.

`feed` does the cheap work inline (resample to 16 kHz with soxr, VAD, endpointing) and hands
utterance audio to the scheduler; the model never runs on the caller's thread. Results come back on
a scheduler worker thread and are released here in order: finals in utterance order, a partial only
while no final of its utterance or a later one is pending, and nothing after `close()`'s future.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable

import numpy as np

from callscribe.asr.segmenter import FRAME, Cut, Segmenter, SegmenterConfig
from callscribe.asr.types import TranscriptEvent, Word
from callscribe.asr.vad import VadStream
from callscribe.audio.rates import MODEL_RATE
from callscribe.audio.resample import StreamResampler

if TYPE_CHECKING:
    from callscribe.asr.engine import Hypothesis
    from callscribe.asr.scheduler import AsrScheduler, Job

log = logging.getLogger(__name__)


class LegPipeline:
    """Created by `AsrScheduler.open_leg`. `feed` and `close` are thread-safe."""

    def __init__(self, scheduler: "AsrScheduler", on_event: Callable[[TranscriptEvent], None], *,
                 origin_ms: int = 0, config: SegmenterConfig) -> None:
        self._scheduler = scheduler
        self._on_event = on_event
        self.origin_ms = origin_ms
        self.partials_enabled = config.partials
        self._lock = threading.Lock()
        self._seg = Segmenter(config)
        self._vad = VadStream()
        self._resampler: StreamResampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # resampled audio not yet a whole VAD frame
        self._fed_ms = 0.0
        self._skipped_ms = 0  # timeline gaps skipped so far (see gap())
        self._offset_of: dict[int, int] = {}  # segment -> the skipped ms in force when it was cut
        self._closed = False
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
        """ms of audio fed so far, plus origin_ms."""
        return self.origin_ms + int(self._fed_ms)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- input ----------------------------------------------------------------------------------

    def feed(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Mono int16 samples at any rate. Cheap: resampling and VAD only."""
        pcm = np.asarray(pcm)
        if pcm.size == 0:
            return
        with self._lock:
            if self._closed:
                return
            if self._resampler is None or self._resampler.rate_in != sample_rate:
                tail = self._resampler.flush() if self._resampler is not None else None
                if tail is not None and tail.size:
                    self._consume(tail)
                self._resampler = StreamResampler(sample_rate)
            self._fed_ms += pcm.shape[0] * 1000.0 / sample_rate
            self._consume(self._resampler.process(pcm.reshape(-1)))

    def gap(self, ms: int) -> None:
        """The leg's media skips `ms` (lost frames, a jump in the peer's clock): any open utterance
        ends here, and later audio is placed `ms` further on. Nothing is fed for the gap."""
        if ms <= 0:
            return
        with self._lock:
            if self._closed:
                return
            if self._resampler is not None:
                tail = self._resampler.flush()
                self._resampler = None
                if tail.size:
                    self._consume(tail)
            padded_ms = 0
            if self._pending.size:  # the last part-frame is padded to a whole one, which takes time too
                padded_ms = (FRAME - self._pending.size) * 1000 // MODEL_RATE
                self._consume(np.zeros(FRAME - self._pending.size, dtype=np.float32))
            self._submit(self._seg.flush())
            self._skipped_ms += max(0, ms - padded_ms)

    def _consume(self, audio: np.ndarray) -> None:
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        n = (audio.size // FRAME) * FRAME
        self._pending = audio[n:].copy()
        if n == 0:
            return
        frames = audio[:n]
        probs = self._vad.process(frames)
        self._submit(self._seg.push(frames, probs))

    def _submit(self, cuts: list[Cut]) -> None:
        for cut in cuts:
            self._offset_of.setdefault(cut.segment, self._skipped_ms)
            if cut.kind == "final":
                with self._emit_lock:
                    ordinal = self._finals_submitted
                    self._finals_submitted += 1
                    self._last_final_segment = cut.segment
                self._scheduler._submit_final(self, cut, ordinal)
            elif self.partials_enabled:
                self._scheduler._submit_partial(self, cut)

    def close(self) -> Future:
        """Force the endpoint now. The future completes once the last final has been passed to
        on_event (at once when nothing is pending); no events follow it."""
        with self._lock:
            if self._close_future is not None:
                return self._close_future
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail.size:
                    self._consume(tail)
            if self._pending.size:  # the last partial frame, padded with silence
                self._consume(np.zeros(FRAME - self._pending.size, dtype=np.float32))
            self._closed = True
            self._submit(self._seg.flush())
            future: Future = Future()
            with self._emit_lock:
                self._close_future = future
                self._maybe_finish()
        self._scheduler._leg_closed(self)
        return future

    # -- output (scheduler worker threads) ------------------------------------------------------

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
        base = self._base_ms(job.cut)
        words = tuple(Word(w.text, base + int(w.start_s * 1000), base + int(w.end_s * 1000), round(w.probability, 4))
                      for w in (hyp.words if hyp is not None and text else []))
        self._call(TranscriptEvent("final", self._utterance(seg), start, end, text, words))

    def _span(self, cut: Cut, hyp: "Hypothesis | None") -> tuple[int, int]:
        base = self._base_ms(cut)
        start, end = base, base + len(cut.audio) * 1000 // 16000
        if hyp is not None and hyp.words:  # tighter than the VAD bounds, which include pre-roll and tail
            start = max(start, base + int(hyp.words[0].start_s * 1000))
            end = max(start, min(end, base + int(hyp.words[-1].end_s * 1000)))
        return start, end

    def _base_ms(self, cut: Cut) -> int:
        return self.origin_ms + self._offset_of.get(cut.segment, 0) + cut.start_sample * 1000 // 16000

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
        if self._close_future is not None and not self._finished and self._finals_done == self._finals_submitted:
            self._finished = True
            self._close_future.set_result(None)

    def _abandon(self) -> None:
        """The scheduler stopped with finals of this leg undecoded: release close() waiters."""
        with self._emit_lock:
            if self._close_future is not None and not self._finished:
                self._finished = True
                self._close_future.set_result(None)
