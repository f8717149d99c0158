"""Is a media stream arriving faster than real time? A leaky bucket over media time.

Each piece of media (or a gap in it) is *due* at max(its arrival, the due time of the previous piece
plus its own duration). A real-time sender's audio is due when it arrives; a sender that runs ahead
of the clock accumulates `ahead_s`. Time a sender leaves unused is not saved up, so a sender that was
slow (or paused) cannot later burst more than the allowance.

The edge uses it to tell a sender it is too fast (ASAPP 4083, a Twilio close code):

    guard = RealTimeGuard(allowance_s=2.5)
    guard.feed(len(samples), rate)      # on every frame, when it arrives
    if guard.overrun: ...               # ahead of real time by more than the allowance

`LegPipeline` keeps one per leg (`LegPipeline.overrun`), and the scheduler orders finals by the due
time of their end of speech, so a leg's burst cannot jump ahead of other legs' real-time finals.
"""

from __future__ import annotations

import time
from typing import Callable

DEFAULT_ALLOWANCE_S = 2.5  # a client's initial buffer and network jitter fit in this


class RealTimeGuard:
    def __init__(self, allowance_s: float = DEFAULT_ALLOWANCE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowance_s = allowance_s
        self._clock = clock
        self._due: float | None = None  # when the media received so far ends, in real time
        self._ahead = 0.0  # seconds ahead of the clock at the last piece

    def advance(self, seconds: float, now: float | None = None) -> float:
        """Account `seconds` of media (or of a gap) arriving now; returns the time its end is due."""
        now = self._clock() if now is None else now
        due = now if self._due is None else max(now, self._due + seconds)
        self._due = due
        self._ahead = due - now
        return due

    def feed(self, samples: int, rate: int, now: float | None = None) -> float:
        """`samples` samples at `rate` Hz arrived now; returns the time their last sample is due."""
        return self.advance(samples / rate, now)

    @property
    def ahead_s(self) -> float:
        """How far ahead of real time the stream was when its last piece arrived."""
        return self._ahead

    @property
    def overrun(self) -> bool:
        """True while the last piece put the stream more than `allowance_s` ahead of real time."""
        return self._ahead > self.allowance_s
