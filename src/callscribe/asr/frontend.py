"""The media front end of every leg (resampling, VAD, utterance cutting), off the callers' threads.

`LegPipeline.feed` only queues the frame; one worker thread per process takes the legs with queued
input in turn (round robin) and runs at most `TURN_MS` of each leg's audio per turn, so a leg that
sent a huge frame or a burst cannot hold up the others. soxr and ONNX Runtime release the GIL while
they compute, so the event loop that feeds the legs stays responsive.

Silero's ONNX export treats the batch axis as time (one LSTM state per call), so VAD cannot be
batched across legs; instead each turn runs all of a leg's queued frames in one session call, which
is where the per-call overhead goes (measured: 65 us for one 32 ms frame, 35 us/frame for 12).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)

TURN_MS = 1000  # audio of one leg processed per turn before the next leg's turn


class FrontEndLeg(Protocol):
    def _front_end_turn(self, budget_ms: float) -> bool:
        """Process up to budget_ms of queued input; True if more is ready to process now."""
        ...


class FrontEnd:
    def __init__(self, name: str = "asr-frontend") -> None:
        self._name = name
        self._cv = threading.Condition()
        self._ready: collections.deque[FrontEndLeg] = collections.deque()
        self._queued: set[FrontEndLeg] = set()
        self._thread: threading.Thread | None = None
        self._running = True

    def wake(self, leg: FrontEndLeg) -> None:
        """The leg has input to process (or may again, after being paced). Cheap; never blocks."""
        with self._cv:
            if not self._running:
                return
            if self._thread is None:  # started lazily: a scheduler that never starts still cuts audio
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            if leg not in self._queued:
                self._queued.add(leg)
                self._ready.append(leg)
                self._cv.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after its current turn; input still queued is not processed."""
        with self._cv:
            self._running = False
            self._ready.clear()
            self._queued.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def backlog(self) -> int:
        """Legs waiting for a turn."""
        with self._cv:
            return len(self._ready)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._running and not self._ready:
                    self._cv.wait()
                if not self._running:
                    return
                leg = self._ready.popleft()
                self._queued.discard(leg)  # a feed during the turn queues the leg again
            try:
                more = leg._front_end_turn(TURN_MS)
            except Exception:
                log.exception("front end: a leg's turn failed")
                more = False
            if more:
                self.wake(leg)
