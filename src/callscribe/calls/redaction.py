"""Applies a stream's `redactionOutput` to transcript text before anything is published.

One CallRedactor per call, shared by its legs, so context carries across turns and speakers (a card
number split over two utterances). In a redacting mode, if the redaction engine is unavailable or
fails, the text is withheld: nothing rather than unredacted text.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from callscribe.asr.types import Word

log = logging.getLogger(__name__)

REDACTION_OUTPUTS = ("redacted", "unredacted", "redacted_and_unredacted")


@dataclass(frozen=True)
class Shown:
    """What may be published for one transcript: `text`, optional `unredacted_text` and `words`."""

    text: str
    unredacted_text: str | None = None
    words: tuple[Word, ...] | None = None


def _new_call_redactor(policy: Any | None = None) -> Any | None:
    try:
        from callscribe.redact import CallRedactor, RedactionPolicy
    except ImportError:
        return None
    try:
        return CallRedactor(policy or RedactionPolicy.asapp_default())
    except Exception:
        log.exception("redaction engine failed to start")
        return None


class CallRedaction:
    """The per-call redaction state. Methods may run in a worker thread; a lock keeps the
    redactor's cross-utterance context consistent when two legs finish at once."""

    def __init__(self) -> None:
        self._redactors: dict[Any, Any | None] = {}  # one per policy asked for (None: ASAPP's default)
        self._lock = threading.Lock()
        self.withheld = 0  # transcripts withheld because redaction was unavailable

    def _get(self, policy: Any | None = None) -> Any | None:
        if policy not in self._redactors:
            self._redactors[policy] = _new_call_redactor(policy) if policy is not None else _new_call_redactor()
            if self._redactors[policy] is None:
                log.warning("redaction engine unavailable: transcripts of redacting streams are withheld")
        return self._redactors[policy]

    def final(self, text: str, words: tuple[Word, ...], role: str, mode: str, detailed: bool,
              policy: Any | None = None) -> Shown | None:
        """The shown form of a final, or None to withhold it. With `detailed`, the words come too,
        masked like the text in a redacting mode."""
        if mode == "unredacted":
            return Shown(text, None, tuple(words) if detailed else None)
        with self._lock:
            red = self._get(policy)
            if red is None:
                self.withheld += 1
                return None
            try:
                result = red.redact_final(text, list(words), role=role)
            except Exception:
                log.exception("redaction failed; transcript withheld")
                self.withheld += 1
                return None
        unredacted = text if mode == "redacted_and_unredacted" else None
        return Shown(result.text, unredacted, tuple(result.words) if detailed else None)

    def partial(self, text: str, role: str, mode: str, policy: Any | None = None) -> Shown | None:
        if mode == "unredacted":
            return Shown(text)
        with self._lock:
            red = self._get(policy)
            if red is None:
                return None
            try:
                masked = red.mask_partial(text, role=role)
            except Exception:
                log.exception("partial masking failed; partial withheld")
                return None
        return Shown(masked, text if mode == "redacted_and_unredacted" else None)
