"""The one ASR scheduler of a process: it owns the model and decides what the model works on.

- Finals are mandatory and go first, oldest first; they are decoded in micro-batches across legs
  (up to `asr_batch_size`), waiting at most `asr_batch_wait_ms` for a batch to fill, and only while
  another worker is busy (a lone final on an idle scheduler starts at once).
- Partials are best effort: one per leg is queued (a newer one replaces it), they run only when no
  final waits and never on the last free worker, and they are dropped when stale.
- Admission control compares the measured decode load with the worker capacity, so callers can
  refuse a new leg before finals of every leg fall behind `final_deadline_ms`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from callscribe.asr.engine import Hypothesis, SpeechEngine
from callscribe.asr.pipeline import LegPipeline
from callscribe.asr.segmenter import Cut, SegmenterConfig
from callscribe.asr.types import TranscriptEvent

log = logging.getLogger(__name__)

LOAD_WINDOW_S = 20.0
PARTIAL_MAX_AGE_S = 1.0
MAX_UTTERANCE_MS = 27000  # a partial not started within this is no longer "live"


@dataclass
class Job:
    kind: str
    leg: LegPipeline
    cut: Cut
    ordinal: int = -1  # finals: order within the leg
    created: float = field(default_factory=time.monotonic)
    # Wall-clock estimate of the end of speech (the final was cut after the endpoint silence).
    speech_end: float = 0.0
    accurate: bool = False  # decode with the engine's slower beam search (no other final was waiting)


class AsrScheduler:
    def __init__(self, engine: SpeechEngine, *, workers: int = 2, batch_size: int = 4, batch_wait_ms: int = 60,
                 segmenter: SegmenterConfig | None = None, final_deadline_ms: int = 1500,
                 metrics: Any = None) -> None:
        self.engine = engine
        self.workers = workers
        self.batch_size = batch_size
        self.batch_wait = batch_wait_ms / 1000
        self.segmenter = segmenter or SegmenterConfig()
        self.final_deadline = final_deadline_ms / 1000
        self.metrics = metrics
        self._cv = threading.Condition()
        self._finals: collections.deque[Job] = collections.deque()
        self._partials: dict[LegPipeline, Job] = {}
        self._partial_busy: set[LegPipeline] = set()
        self._legs: set[LegPipeline] = set()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._drain_until = 0.0
        self._busy = 0
        self._busy_log: collections.deque[tuple[float, float, str]] = collections.deque()  # (end, seconds, kind)
        self._latencies: collections.deque[float] = collections.deque(maxlen=400)
        self._counts: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_settings(cls, engine: SpeechEngine, settings: Any, metrics: Any = None) -> "AsrScheduler":
        # Whisper sees at most 30 s, and the decode wants a margin after the speech.
        max_utt = min(settings.max_utterance_ms, MAX_UTTERANCE_MS)
        seg = SegmenterConfig(endpoint_silence_ms=settings.endpoint_silence_ms, max_utterance_ms=max_utt,
                              partial_interval_ms=settings.partial_interval_ms)
        return cls(engine, workers=settings.asr_workers, batch_size=settings.asr_batch_size,
                   batch_wait_ms=settings.asr_batch_wait_ms, segmenter=seg,
                   final_deadline_ms=settings.final_deadline_ms, metrics=metrics)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cv:
            if self._running:
                return
            self._running = True
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"asr-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, drain_s: float = 5.0) -> None:
        """Stop the workers; finals already queued are decoded for up to `drain_s` seconds."""
        with self._cv:
            self._running = False
            self._drain_until = time.monotonic() + drain_s
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=drain_s + 30)
        self._threads.clear()
        with self._cv:
            left = list(self._finals)
            self._finals.clear()
            self._partials.clear()
        for job in left:
            job.leg._abandon()
        if left:
            log.warning("scheduler stopped with %d finals undecoded", len(left))

    def open_leg(self, on_event: Callable[[TranscriptEvent], None], *, origin_ms: int = 0,
                 partials: bool = True, endpoint_silence_ms: int | None = None) -> LegPipeline:
        cfg = SegmenterConfig(**{**self.segmenter.__dict__, "partials": partials})
        if endpoint_silence_ms is not None:  # a leg that asked for its own endpointing
            cfg.endpoint_silence_ms = endpoint_silence_ms
        leg = LegPipeline(self, on_event, origin_ms=origin_ms, config=cfg)
        with self._cv:
            self._legs.add(leg)
            self._gauge()
        return leg

    # -- called by legs ---------------------------------------------------------------------------

    def _submit_final(self, leg: LegPipeline, cut: Cut, ordinal: int) -> None:
        now = time.monotonic()
        job = Job("final", leg, cut, ordinal, now, speech_end=now - cut.trailing_silence_s)
        with self._cv:
            if self._partials.pop(leg, None) is not None:
                self._dropped()
            self._finals.append(job)
            self._gauge()
            self._cv.notify()

    def _submit_partial(self, leg: LegPipeline, cut: Cut) -> None:
        with self._cv:
            if self._partials.pop(leg, None) is not None:
                self._dropped()  # coalesced: only the newest audio matters
            self._partials[leg] = Job("partial", leg, cut)
            self._gauge()
            self._cv.notify()

    def _leg_closed(self, leg: LegPipeline) -> None:
        with self._cv:
            self._legs.discard(leg)
            if self._partials.pop(leg, None) is not None:
                self._dropped()
            self._gauge()

    def _final_emitted(self, job: Job) -> None:
        latency = time.monotonic() - job.speech_end
        self._latencies.append(latency)
        if self.metrics is not None:
            self.metrics.finals.inc()
            self.metrics.final_latency.observe(latency)

    # -- workers ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                batch = self._next_batch()
                if batch is None:
                    return
                if not batch:
                    continue
                self._busy += 1
            kind = batch[0].kind
            started = time.monotonic()
            try:
                hyps: list[Hypothesis | None] = list(self.engine.decode_batch(
                    [j.cut.audio for j in batch], word_timestamps=(kind == "final"),
                    accurate=batch[0].accurate))
            except Exception:
                log.exception("decode failed for a batch of %d %ss", len(batch), kind)
                hyps = [None] * len(batch)
            elapsed = time.monotonic() - started
            for job, hyp in zip(batch, hyps):
                if kind == "final":
                    job.leg._deliver_final(job, hyp)
                elif hyp is not None and job.leg._deliver_partial(job, hyp):
                    if self.metrics is not None:
                        self.metrics.partials.inc()
                else:
                    self._dropped()
            with self._cv:
                self._busy -= 1
                self._partial_busy.difference_update(j.leg for j in batch if j.kind == "partial")
                self._busy_log.append((time.monotonic(), elapsed, kind))
                self._counts[kind + "_batches"] += 1
                self._counts[kind + "s"] += len(batch)
                self._counts[kind + "_audio_ms"] += sum(len(j.cut.audio) for j in batch) // 16
                self._gauge()
                self._cv.notify_all()

    def _next_batch(self) -> list[Job] | None:
        """Under the lock: the next batch, [] to look again, None to exit."""
        while True:
            if not self._running and (not self._finals or time.monotonic() > self._drain_until):
                return None
            if self._finals:
                batch = [self._finals.popleft() for _ in range(min(self.batch_size, len(self._finals)))]
                if len(batch) < self.batch_size and self.batch_wait > 0 and self._busy > 0 and self._running:
                    # Others are decoding: a short wait may fill the batch at little cost.
                    deadline = time.monotonic() + self.batch_wait
                    while len(self._finals) < self.batch_size - len(batch) and self._busy > 0:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cv.wait(left)
                    while self._finals and len(batch) < self.batch_size:
                        batch.append(self._finals.popleft())
                # Beam search only when no other final waits: under load finals stay greedy and fast.
                batch[0].accurate = not self._finals
                self._gauge()
                return batch
            batch = self._take_partials()
            if batch:
                return batch
            self._cv.wait(0.5 if self._partials else None)

    def _take_partials(self) -> list[Job]:
        if not self._running or (self.workers > 1 and self._busy >= self.workers - 1):
            return []  # the last free worker stays free for finals
        now = time.monotonic()
        batch: list[Job] = []
        for leg, job in list(self._partials.items()):
            if now - job.created > PARTIAL_MAX_AGE_S or not leg.partial_wanted(job.cut.segment):
                del self._partials[leg]
                self._dropped()
            elif leg not in self._partial_busy and len(batch) < self.batch_size:
                del self._partials[leg]
                batch.append(job)
        self._partial_busy.update(j.leg for j in batch)
        return batch

    # -- observation and admission ----------------------------------------------------------------

    def _dropped(self) -> None:
        self._counts["partials_dropped"] += 1
        if self.metrics is not None:
            self.metrics.partials_dropped.inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.asr_queue.labels(kind="final").set(len(self._finals))
            self.metrics.asr_queue.labels(kind="partial").set(len(self._partials))

    def _load(self, kind: str | None = None) -> float:
        """Fraction of worker time spent decoding over the recent window (finals only if kind)."""
        now = time.monotonic()
        while self._busy_log and now - self._busy_log[0][0] > LOAD_WINDOW_S:
            self._busy_log.popleft()
        busy = sum(s for _, s, k in self._busy_log if kind is None or k == kind)
        return busy / (LOAD_WINDOW_S * self.workers)

    def can_admit(self, extra_legs: int = 1) -> bool:
        """False when `extra_legs` more legs would likely push finals past final_deadline_ms."""
        with self._cv:
            legs = len(self._legs)
            if self._finals:
                oldest = time.monotonic() - self._finals[0].created
                if oldest > self.final_deadline / 2:
                    return False  # already behind
            recent = list(self._latencies)[-100:]
            if len(recent) >= 20 and np.percentile(recent, 95) > self.final_deadline:
                return False
            load = self._load("final")
            if legs == 0 or load < 0.05:
                return True
            # Finals' decode load grows with legs (batching makes this pessimistic, i.e. safe).
            return load * (legs + extra_legs) / legs < 0.8

    def stats(self) -> dict:
        with self._cv:
            lat = list(self._latencies)
            return {
                "active_legs": len(self._legs),
                "finals_queued": len(self._finals),
                "partials_queued": len(self._partials),
                "busy_workers": self._busy,
                "workers": self.workers,
                "load": round(self._load(), 3),
                "final_load": round(self._load("final"), 3),
                "final_latency_p50": float(np.percentile(lat, 50)) if lat else None,
                "final_latency_p95": float(np.percentile(lat, 95)) if lat else None,
                **dict(self._counts),
            }
