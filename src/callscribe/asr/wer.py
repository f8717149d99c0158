"""Word error rate with a normaliser suited to Whisper's output (numbers as digits, no punctuation)."""

from __future__ import annotations

import re
from typing import Sequence


def normalize(text: str) -> list[str]:
    """Lower-case words; spoken numbers become digits, one token per digit ("111" -> 1 1 1)."""
    try:
        from text_to_num import alpha2digit

        text = alpha2digit(text, "en")
    except Exception:  # text2num is optional here; without it numbers stay as written
        pass
    text = text.lower().replace("'", "")
    text = re.sub(r"(?<=\d)[,.](?=\d)", "", text)
    text = re.sub(r"(\d)", r" \1 ", text)
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus WER: total edits over total reference words (strings are normalised first)."""
    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]  # type: ignore[list-item]
    errors = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = normalize(ref), normalize(hyp)
        errors += edit_distance(r, h)
        words += len(r)
    return errors / max(1, words)
