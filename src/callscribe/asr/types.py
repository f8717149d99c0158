"""Values that flow out of the speech engine: words, hypotheses and transcript events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["partial", "final"]


@dataclass(frozen=True)
class Word:
    """One recognised word; times are ms from the start of the leg."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass(frozen=True)
class TranscriptEvent:
    """A partial (best effort, may be revised) or final (mandatory) result for one utterance of a leg.

    `utterance` numbers the utterances of a leg from 0; a final closes its utterance, and no partial
    of that utterance follows it. Times are ms from the start of the leg.
    """

    kind: EventKind
    utterance: int
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] = field(default_factory=tuple)
