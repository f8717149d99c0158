"""The one ASR scheduler of a process: it owns the model and decides what the model works on.

- Finals are mandatory and go first, earliest deadline first: a final's deadline is the real-time
  due time of its end of speech (realtime.py), so a leg that sends faster than real time queues its
  finals behind other legs' real-time ones instead of ahead of them, and each leg has at most
  `max_queued_finals` waiting (its input is paced beyond that; pipeline.py). They are decoded in
  micro-batches across legs (up to `asr_batch_size`), waiting at most `asr_batch_wait_ms` for a batch
  to fill, and only while another worker is busy (a lone final on an idle scheduler starts at once).
- Speculative finals: some silence before the endpoint, the segmenter offers the utterance as the
  final would cut it; a nearly idle scheduler decodes it (like a final), and when the endpoint comes
  with the same audio the final takes that result at once (or waits for the decode under way)
  instead of queueing. Above a low decode load they are not decoded, so they cost nothing then.
- Partials are best effort: one per leg is queued (a newer one replaces it), they run only when no
  final waits and never on the last free worker, an utterance's first partial goes first (above
  half load only first partials run), batches are capped in padded window, and stale ones are dropped.
- Admission control looks at the present: finals waiting now, final latencies of the last
  `RECENT_S` seconds, and the decode time of finals per leg-second (remembered across idle periods,
  for ramps too young to measure) projected for the new legs. An idle server (no legs, no finals
  waiting) always admits and forgets past latencies; a refusal is logged with its reason and counted
  (callscribe_admission_refused_total{reason}).
- The media front end of every leg (resampling, VAD, cutting) runs on one worker thread (frontend.py).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from callscribe.asr.engine import Hypothesis, SpeechEngine
from callscribe.asr.frontend import FrontEnd
from callscribe.asr.pipeline import MAX_QUEUED_FINALS, LegPipeline
from callscribe.asr.segmenter import Cut, SegmenterConfig
from callscribe.asr.types import TranscriptEvent

log = logging.getLogger(__name__)

LOAD_WINDOW_S = 20.0
RECENT_S = 20.0  # admission's memory of final latencies: older ones no longer describe the present
MIN_RECENT_FINALS = 10  # fewer recent finals than this say nothing about the tail
MIN_LEG_SECONDS = 120.0  # leg-time observed before the decode cost per leg is trusted
# Beam search (finals while none other waits) costs this much more than the greedy decoding a loaded
# server does (measured, tiny.en int8, CPU time: 1.4-1.8x by utterance length and batch); admission
# counts an accurate batch at its greedy cost, or a quiet start would make legs look dearer.
ACCURATE_COST = 1.6
# Of the workers' time, by finals, that admission plans for. Measured over the wire (bench/load.py,
# 48 legs on a shared 2-core machine): at 0.73 the final p95 was 2.85 s, so 0.8 let overload in.
MAX_UTILISATION = 0.6
PARTIAL_MAX_AGE_S = 1.0
SPECULATE_LOAD = 0.2  # decode load (all kinds, of the workers' time) below which finals are speculated
SPECULATIVE_MAX_AGE_S = 1.0  # beyond this its endpoint has come (or speech went on): not worth decoding
FILL_LOOKAHEAD = 2  # a batch's companions come from the 2 x batch_size most urgent finals
PARTIALS_FIRST_ONLY_LOAD = 0.5  # decode load above which only an utterance's first partial is decoded
PARTIAL_MARGIN_S = 2.0  # the engine pads a batch's window by about this much
PARTIAL_BATCH_WINDOW_S = 24.0  # utterances x padded seconds of one partial batch at most (one always goes)
MAX_UTTERANCE_MS = 27000  # a partial not started within this is no longer "live"


@dataclass
class Job:
    kind: str
    leg: LegPipeline
    cut: Cut
    ordinal: int = -1  # finals: order within the leg
    created: float = 0.0  # scheduler clock when queued
    # When the end of speech was due in real time (the final was cut after the endpoint silence);
    # finals are decoded in this order across legs.
    speech_end: float = 0.0
    accurate: bool = False  # decode with the engine's slower beam search (no other final was waiting)

    @property
    def ready(self) -> float:
        """When a real-time sender's final would have been ready to decode (for how long it waited)."""
        return max(self.created, self.speech_end + self.cut.trailing_silence_s)


def _same_audio(a: Cut, b: Cut) -> bool:
    return a.segment == b.segment and a.start_sample == b.start_sample and len(a.audio) == len(b.audio)


class LegSeconds:
    """How many legs were open over time: the integral over a recent window (leg-seconds)."""

    def __init__(self, now: float) -> None:
        self._changes: collections.deque[tuple[float, int]] = collections.deque([(now, 0)])

    def set(self, now: float, legs: int) -> None:
        self._changes.append((now, legs))
        while len(self._changes) > 1 and now - self._changes[1][0] > LOAD_WINDOW_S:
            self._changes.popleft()

    def over(self, start: float, now: float) -> float:
        total = 0.0
        points = list(self._changes) + [(now, 0)]
        for (t0, n), (t1, _) in zip(points, points[1:]):
            total += n * max(0.0, t1 - max(t0, start))
        return total


@dataclass(frozen=True)
class Admission:
    ok: bool
    reason: str = ""  # when refused: "behind" | "late" | "load"
    detail: str = ""


class AsrScheduler:
    def __init__(self, engine: SpeechEngine, *, workers: int = 2, batch_size: int = 4, batch_wait_ms: int = 60,
                 segmenter: SegmenterConfig | None = None, final_deadline_ms: int = 1500,
                 metrics: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.workers = workers
        self.batch_size = batch_size
        self.batch_wait = batch_wait_ms / 1000
        self.segmenter = segmenter or SegmenterConfig()
        self.final_deadline = final_deadline_ms / 1000
        self.metrics = metrics
        self.clock = clock  # every time admission, deadlines and latency use (injectable for tests)
        self.front_end = FrontEnd()
        self._cv = threading.Condition()
        self._finals: list[tuple[float, int, Job]] = []  # heap on the real-time deadline
        self._seq = itertools.count()
        self._every_leg: weakref.WeakSet[LegPipeline] = weakref.WeakSet()  # for stop() to release waiters
        self._partials: dict[LegPipeline, Job] = {}
        self._partial_busy: set[LegPipeline] = set()
        # Speculative finals, per leg: queued; being decoded (with the finals waiting for it); decoded.
        self._speculative: dict[LegPipeline, Job] = {}
        self._spec_running: dict[LegPipeline, tuple[Job, list[Job]]] = {}
        self._spec_done: dict[LegPipeline, tuple[Job, Hypothesis | None]] = {}
        self._legs: set[LegPipeline] = set()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._drain_until = 0.0
        self._busy = 0
        self._busy_log: collections.deque[tuple[float, float, str]] = collections.deque()  # (end, greedy-equivalent s, kind)
        self._leg_seconds = LegSeconds(clock())
        self._since = clock()  # when the server last stopped being idle (admission's memory starts there)
        self._cost_per_leg: float | None = None  # finals' decode seconds per leg-second, last measured
        self._latencies: collections.deque[tuple[float, float]] = collections.deque(maxlen=2000)  # (at, s)
        self._counts: collections.defaultdict[str, float] = collections.defaultdict(float)

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
        self.front_end.stop()
        with self._cv:
            self._running = False
            self._drain_until = time.monotonic() + drain_s
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=drain_s + 30)
        self._threads.clear()
        with self._cv:
            left = len(self._finals)
            self._finals.clear()
            self._partials.clear()
            self._speculative.clear()
            self._spec_done.clear()
            legs = list(self._every_leg)
        for leg in legs:
            leg._abandon()
        if left:
            log.warning("scheduler stopped with %d finals undecoded", left)

    def open_leg(self, on_event: Callable[[TranscriptEvent], None], *, origin_ms: int = 0,
                 partials: bool = True, endpoint_silence_ms: int | None = None,
                 max_queued_finals: int = MAX_QUEUED_FINALS,
                 on_settled: Callable[[int], None] | None = None) -> LegPipeline:
        """A new leg. `endpoint_silence_ms`: its own endpointing (None: the server's);
        `max_queued_finals`: finals of this leg waiting for the model before its input is paced
        (offline callers that feed faster than real time may want more); `on_settled(ms)`: told,
        in order with the finals, the leg time before which its transcript is complete."""
        cfg = SegmenterConfig(**{**self.segmenter.__dict__, "partials": partials})
        if endpoint_silence_ms is not None:
            cfg.endpoint_silence_ms = endpoint_silence_ms
        leg = LegPipeline(self, on_event, origin_ms=origin_ms, config=cfg, max_queued_finals=max_queued_finals,
                          on_settled=on_settled)
        with self._cv:
            self._legs.add(leg)
            self._leg_seconds.set(self.clock(), len(self._legs))
            self._every_leg.add(leg)
            self._gauge()
        return leg

    # -- called by legs ---------------------------------------------------------------------------

    def _submit_final(self, leg: LegPipeline, cut: Cut, ordinal: int, speech_end: float) -> None:
        job = Job("final", leg, cut, ordinal, self.clock(), speech_end=speech_end)
        with self._cv:
            if self._partials.pop(leg, None) is not None:
                self._dropped()
            claimed = self._claim_speculative(job)
            if claimed is None:
                heapq.heappush(self._finals, (speech_end, next(self._seq), job))
                self._gauge()
                self._cv.notify()
        if claimed is not None and claimed[0] == "done":
            leg._deliver_final(job, claimed[1])

    def _claim_speculative(self, job: Job) -> tuple[str, Hypothesis | None] | None:
        """Under the lock: ("done", hyp) if this final's audio was decoded speculatively, ("wait", None)
        if that decode is under way (the final is delivered when it ends), None to queue the final."""
        leg, cut = job.leg, job.cut
        self._speculative.pop(leg, None)  # not started yet: the final goes the usual way
        done = self._spec_done.pop(leg, None)
        if done is not None and _same_audio(done[0].cut, cut) and done[1] is not None:
            self._speculation_used()
            return "done", done[1]
        running = self._spec_running.get(leg)
        if running is not None and _same_audio(running[0].cut, cut):
            running[1].append(job)
            self._speculation_used()
            return "wait", None
        return None

    def _speculation_used(self) -> None:
        self._counts["speculative_used"] += 1
        if self.metrics is not None:
            self.metrics.speculated.inc()

    def _submit_speculative(self, leg: LegPipeline, cut: Cut) -> None:
        with self._cv:
            self._speculative[leg] = Job("speculative", leg, cut, created=time.monotonic())
            self._spec_done.pop(leg, None)
            self._cv.notify()

    def _speculated(self, job: Job, hyp: Hypothesis | None) -> None:
        """A speculative decode ended: hand it to the finals that wait for it, or keep it for the final."""
        with self._cv:
            waiting = self._spec_running.pop(job.leg, (job, []))[1]
            if not waiting:
                self._spec_done[job.leg] = (job, hyp)
            elif hyp is None:  # the decode failed: the finals queue as usual
                for final in waiting:
                    heapq.heappush(self._finals, (final.speech_end, next(self._seq), final))
                self._cv.notify_all()
                return
        for final in waiting:
            final.leg._deliver_final(final, hyp)

    def _submit_partial(self, leg: LegPipeline, cut: Cut) -> None:
        with self._cv:
            if self._partials.pop(leg, None) is not None:
                self._dropped()  # coalesced: only the newest audio matters
            self._partials[leg] = Job("partial", leg, cut, created=time.monotonic())
            self._gauge()
            self._cv.notify()

    def _leg_closed(self, leg: LegPipeline) -> None:
        with self._cv:
            self._legs.discard(leg)
            self._leg_seconds.set(self.clock(), len(self._legs))
            if self._partials.pop(leg, None) is not None:
                self._dropped()
            self._speculative.pop(leg, None)
            self._gauge()

    def _final_emitted(self, job: Job) -> None:
        now = self.clock()
        latency = now - job.speech_end
        with self._cv:
            self._latencies.append((now, latency))
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
            started = self.clock()
            try:
                hyps: list[Hypothesis | None] = list(self.engine.decode_batch(
                    [j.cut.audio for j in batch], word_timestamps=(kind != "partial"),
                    accurate=batch[0].accurate))
            except Exception:
                log.exception("decode failed for a batch of %d %ss", len(batch), kind)
                hyps = [None] * len(batch)
            elapsed = self.clock() - started
            for job, hyp in zip(batch, hyps):
                if kind == "final":
                    job.leg._deliver_final(job, hyp)
                elif kind == "speculative":
                    self._speculated(job, hyp)
                elif hyp is not None and job.leg._deliver_partial(job, hyp):
                    if self.metrics is not None:
                        self.metrics.partials.inc()
                else:
                    self._dropped()
            with self._cv:
                self._busy -= 1
                self._partial_busy.difference_update(j.leg for j in batch if j.kind == "partial")
                now = self.clock()
                self._busy_log.append((now, elapsed / ACCURATE_COST if batch[0].accurate else elapsed, kind))
                while now - self._busy_log[0][0] > LOAD_WINDOW_S:
                    self._busy_log.popleft()
                if kind == "final":
                    self._leg_cost(now)  # keeps the learnt cost current between starts
                if self.metrics is not None:
                    self.metrics.asr_busy.labels(kind=kind).inc(elapsed)
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
                batch = [heapq.heappop(self._finals)[2]]
                self._fill(batch)
                if len(batch) < self.batch_size and self.batch_wait > 0 and self._busy > 0 and self._running:
                    # Others are decoding: a short wait may fill the batch at little cost.
                    deadline = time.monotonic() + self.batch_wait
                    while len(self._finals) < self.batch_size - len(batch) and self._busy > 0:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cv.wait(left)
                    self._fill(batch)
                # Beam search only when no other final is due: under load finals stay greedy and fast
                # (finals a too-fast leg queued ahead of real time do not count).
                now = self.clock()
                batch[0].accurate = not any(j.speech_end <= now for _, _, j in self._finals)
                self._gauge()
                return batch
            batch = self._take_speculative() or self._take_partials()
            if batch:
                return batch
            self._cv.wait(0.5 if self._partials or self._speculative else None)

    def _fill(self, batch: list[Job]) -> None:
        """Under the lock: add queued finals to a batch whose first job is the most urgent one. Among
        the next most urgent, those closest in length go together: a batch is padded to its longest
        utterance, and (measured, tiny.en int8, CPU time) a 1.4 s final costs 17 ms more in a batch of
        short ones but 57 ms more beside a 7 s one (70 ms alone)."""
        room = self.batch_size - len(batch)
        if room <= 0 or not self._finals:
            return
        window = heapq.nsmallest(FILL_LOOKAHEAD * self.batch_size, self._finals)
        # Only each leg's next final: a leg's later final decoded first would wait for the earlier one.
        firsts: dict[LegPipeline, tuple[float, int, Job]] = {}
        for entry in window:
            firsts.setdefault(entry[2].leg, entry)
        length = max(len(j.cut.audio) for j in batch)
        chosen = sorted(firsts.values(), key=lambda e: (abs(len(e[2].cut.audio) - length), e[0]))[:room]
        for entry in chosen:
            self._finals.remove(entry)
            batch.append(entry[2])
        heapq.heapify(self._finals)
        batch[1:] = sorted(batch[1:], key=lambda j: j.speech_end)

    def _take_speculative(self) -> list[Job]:
        """Under the lock, with no final waiting: speculative finals, only while decoding of every kind
        keeps the workers less than SPECULATE_LOAD busy. A free worker is not a free core: measured at
        16 legs on a shared CPU, speculation took 4x the decode time of the finals it sped up and
        slowed the rest (p95 1.75 s)."""
        if not self._running or not self._speculative or self._busy >= self.workers:
            return []
        if self._load() >= SPECULATE_LOAD:
            self._speculative.clear()
            return []
        now = time.monotonic()
        batch: list[Job] = []
        for leg, job in list(self._speculative.items()):
            if now - job.created > SPECULATIVE_MAX_AGE_S or not leg.partial_wanted(job.cut.segment):
                del self._speculative[leg]
            elif leg not in self._spec_running and len(batch) < self.batch_size:
                del self._speculative[leg]
                batch.append(job)
                self._spec_running[leg] = (job, [])
        if batch:
            batch[0].accurate = True  # what an idle scheduler gives a final
        return batch

    def _take_partials(self) -> list[Job]:
        if not self._running or (self.workers > 1 and self._busy >= self.workers - 1):
            return []  # the last free worker stays free for finals
        now = time.monotonic()
        live: list[Job] = []
        for leg, job in list(self._partials.items()):
            if now - job.created > PARTIAL_MAX_AGE_S or not leg.partial_wanted(job.cut.segment):
                del self._partials[leg]
                self._dropped()
            elif leg not in self._partial_busy:
                live.append(job)
        # An utterance's first partial is what a listener waits for: those go first, then the oldest.
        # Later ones cost more (the utterance so far, again) and, above PARTIALS_FIRST_ONLY_LOAD, wait:
        # they take cores the finals need even when a worker is free.
        live.sort(key=lambda j: j.leg.showed_partial(j.cut.segment))
        if live and live[-1].leg.showed_partial(live[-1].cut.segment) and self._load() >= PARTIALS_FIRST_ONLY_LOAD:
            live = [j for j in live if not j.leg.showed_partial(j.cut.segment)]
        batch: list[Job] = []
        longest = 0.0
        for job in live:
            length = max(longest, len(job.cut.audio) / 16000)
            # A batch costs about (utterances x padded window); keep it small, since a final that
            # arrives meanwhile may have to wait for it.
            if batch and (len(batch) >= self.batch_size
                          or (len(batch) + 1) * (length + PARTIAL_MARGIN_S) > PARTIAL_BATCH_WINDOW_S):
                break
            del self._partials[job.leg]
            batch.append(job)
            longest = length
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

    def _audio_dropped(self, seconds: float) -> None:
        with self._cv:
            self._counts["audio_dropped_s"] += seconds
        if self.metrics is not None:
            self.metrics.audio_dropped.inc(seconds)

    def _load(self, kind: str | None = None) -> float:
        """Fraction of worker time spent decoding over the recent window (finals only if kind)."""
        now = self.clock()
        while self._busy_log and now - self._busy_log[0][0] > LOAD_WINDOW_S:
            self._busy_log.popleft()
        busy = sum(s for _, s, k in self._busy_log if kind is None or k == kind)
        return busy / (LOAD_WINDOW_S * self.workers)

    def _leg_cost(self, now: float) -> float | None:
        """Under the lock: decode seconds of finals per leg-second since the server was last idle (at
        most LOAD_WINDOW_S), or None while too little has been seen. Once a busy period is older than
        the window, the figure is also kept as the cost a leg is known to have."""
        start = max(now - LOAD_WINDOW_S, self._since)
        finals = [sec for end, sec, kind in self._busy_log if kind == "final" and end >= start]
        leg_seconds = self._leg_seconds.over(start, now)
        if leg_seconds < MIN_LEG_SECONDS or len(finals) < MIN_RECENT_FINALS:
            return None
        cost = sum(finals) / leg_seconds
        if now - self._since >= LOAD_WINDOW_S:
            self._cost_per_leg = cost
        return cost

    def admission(self, extra_legs: int = 1) -> Admission:
        """Would `extra_legs` more legs likely push finals past final_deadline_ms? The present counts:
        an idle server admits, and what ran late more than RECENT_S ago is forgotten; only what a leg
        costs to decode is remembered, to judge a ramp too young to measure."""
        with self._cv:
            legs = len(self._legs)
            if legs == 0 and not self._finals:
                # Idle: what ran late before says nothing about the next calls; start afresh.
                self._latencies.clear()
                self._busy_log.clear()
                self._since = self.clock()
                return Admission(True)
            now = self.clock()
            if self._finals:
                waited = max(now - j.ready for _, _, j in self._finals)
                if waited > self.final_deadline / 2:
                    return Admission(False, "behind", f"a final has waited {waited:.2f} s for the model")
            while self._latencies and now - self._latencies[0][0] > RECENT_S:
                self._latencies.popleft()
            recent = [lat for _, lat in self._latencies]
            if len(recent) >= MIN_RECENT_FINALS:
                p95 = float(np.percentile(recent, 95))
                if p95 > self.final_deadline:
                    return Admission(False, "late", f"final latency p95 {p95:.2f} s over the last {RECENT_S:.0f} s")
            # Decode time of finals per leg-second, measured since the server was last idle (at most
            # LOAD_WINDOW_S): legs that opened a moment ago count only for the time they were open.
            # Wall time, so a CPU shared with other work shows up as a dearer leg. Batching makes the
            # projection pessimistic, i.e. safe. While a ramp is younger than LOAD_WINDOW_S its finals
            # lag its legs, so the cost learnt from earlier busy periods (if higher) stands in.
            if legs == 0:
                return Admission(True)
            per_leg = self._cost_per_leg
            fresh = self._leg_cost(now)
            if fresh is not None:
                per_leg = fresh if now - self._since >= LOAD_WINDOW_S else max(fresh, per_leg or 0.0)
            if per_leg is None:
                return Admission(True)  # too little seen yet to say a leg costs too much
            projected = per_leg * (legs + extra_legs) / self.workers
            if projected >= MAX_UTILISATION:
                return Admission(False, "load", f"finals take {per_leg * 1000:.0f} ms of decoding per leg-second; "
                                                f"{legs + extra_legs} legs would keep {projected:.0%} of "
                                                f"{self.workers} workers busy")
            return Admission(True)

    def can_admit(self, extra_legs: int = 1) -> bool:
        """False when `extra_legs` more legs would likely push finals past final_deadline_ms; a refusal
        is logged with its reason and counted in callscribe_admission_refused_total{reason}."""
        verdict = self.admission(extra_legs)
        if not verdict.ok:
            log.warning("refusing %d new leg(s): %s (%s)", extra_legs, verdict.reason, verdict.detail)
            with self._cv:
                self._counts["refused_" + verdict.reason] += 1
            if self.metrics is not None:
                self.metrics.admission_refused.labels(reason=verdict.reason).inc()
        return verdict.ok

    def stats(self) -> dict:
        with self._cv:
            lat = [x for _, x in self._latencies]
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
                "front_end_backlog_legs": self.front_end.backlog,
                "input_backlog_s": round(sum(leg.backlog_ms for leg in self._every_leg) / 1000, 3),
                **dict(self._counts),
            }
