"""The JS SDK's TranscriptEvent JSON (specs/control-apis.md §C.3), made from callscribe's events.

Frames on the meeting socket mirror the SdkTranscriptEvent oneof, in the JS SDK's field names::

    {"transcript": {"results": [{"resultId", "channelId", "isPartial", "startTimeMs", "endTimeMs",
        "languageCode", "alternatives": [{"transcript", "items": [{"type": "pronunciation"|"punctuation",
        "content", "startTimeMs", "endTimeMs", "attendee": {"attendeeId", "externalUserId"},
        "confidence"?, "stable"?}], "entities"?: [{"category": "PII", "type"?, "content",
        "confidence", "startTimeMs", "endTimeMs"}]}]}]}}
    {"status": {"type": "started"|"stopped"|"interrupted"|"resumed"|"failed", "eventTimeMs",
        "transcriptionRegion", "transcriptionConfiguration" (JSON string), "message"?}}

Times are epoch ms. `resultId` is the same for every partial of one utterance and its final. Items
come from the engine's words (finals) or the text's tokens (partials, whose words the engine does
not time: their times are spread over the utterance). `stable` is set only when the meeting asked
for partial-results stabilisation: an item is stable once it has read the same in `stable_after`
partials in a row (1, 2, 3 for high, medium, low) and every item before it is stable; on a final,
every item is stable.
"""

from __future__ import annotations

import re
import uuid
from difflib import SequenceMatcher
from typing import Any, Sequence

from callscribe.api.chime_settings import MeetingTranscription
from callscribe.asr.types import Word
from callscribe.calls.events import UtteranceEvent

_LABEL = re.compile(r"\[([A-Z_]+)\]")
# Words (keeping "4.5", "a.b@c.com", "don't" and masks whole) and punctuation, as Transcribe splits them.
_TOKEN = re.compile(r"\[[A-Z_]+\]|[\w'#@\-]+(?:[.@][\w'#@\-]+)*|[^\w\s]")
_PUNCT = re.compile(r"[^\w\s\[\]#]+")


def result_id(event: UtteranceEvent) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event.stream_id}/{event.utterance}"))


def status_frame(data: dict[str, Any]) -> dict[str, Any]:
    status = {"type": data["type"], "eventTimeMs": data["eventTimeMs"], "transcriptionRegion": data["transcriptionRegion"],
              "transcriptionConfiguration": data["transcriptionConfiguration"]}
    if data.get("message"):
        status["message"] = data["message"]
    return {"status": status}


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


Timed = tuple[str, float, float, "float | None"]  # token, start, end, confidence


def _word_tokens(words: Sequence[Word]) -> list[Timed]:
    """The engine's words as tokens; a word that redaction emptied (the rest of a masked number)
    extends the token before it, so a "[PII]" item spans the whole entity."""
    out: list[Timed] = []
    for w in words:
        toks = _tokens(w.text)
        if not toks and out:
            tok, s, _, conf = out[-1]
            out[-1] = (tok, s, float(w.end_ms), conf)
        for tok in toks:
            out.append((tok, float(w.start_ms), float(w.end_ms), w.confidence))
    return out


def _spread(toks: Sequence[str], start: float, end: float, conf: float | None = None) -> list[Timed]:
    total = sum(len(t) for t in toks) or 1
    out, at = [], start
    for tok in toks:
        step = (end - start) * len(tok) / total
        out.append((tok, at, at + step, conf))
        at += step
    return out


def _timed(text: str, timed_words: list[Timed], start: float, end: float) -> list[Timed]:
    """Each token of `text` with times: the words' own where they spell it; where they differ (the
    words carry labels, the text what was said) the differing tokens share the words' time span;
    without words, spread over the result in proportion to their length."""
    toks = _tokens(text)
    if not timed_words:
        return _spread(toks, start, end)
    if [t for t, *_ in timed_words] == toks:
        return timed_words
    out: list[Timed] = []
    matcher = SequenceMatcher(a=[t for t, *_ in timed_words], b=toks, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out += timed_words[i1:i2]
        elif j2 > j1:
            s = timed_words[i1][1] if i1 < i2 else (out[-1][2] if out else start)
            e = timed_words[i2 - 1][2] if i1 < i2 else (timed_words[i2][1] if i2 < len(timed_words) else end)
            confs = [c for *_, c in timed_words[i1:i2] if c is not None]
            out += _spread(toks[j1:j2], s, max(s, e), min(confs) if confs else None)
    return out


def entities(shown: str, original: str | None, spans: Sequence[tuple[float, float]], redaction: bool
             ) -> list[dict[str, Any]]:
    """The entities that labels in `shown` stand for: with the original text, their content and
    type (identification); under redaction always the label alone ("[PII]"), whatever `original`.
    `spans` are the times of the labels, in order."""
    out: list[dict[str, Any]] = []
    pieces = _LABEL.split(shown)  # text, label, text, label, ..., text
    pos = 0
    for k in range(1, len(pieces), 2):
        label = pieces[k]
        before, after = pieces[k - 1], pieces[k + 1]
        content = f"[{label}]"
        if not redaction and original is not None and original.startswith(before, pos):
            begin = pos + len(before)
            stop = original.find(after, begin) if after else len(original)
            if stop >= begin:
                content, pos = original[begin:stop], stop
        start, end = spans[min(k // 2, len(spans) - 1)]
        entity: dict[str, Any] = {"category": "PII", "content": content, "confidence": 1.0,
                                  "startTimeMs": int(start), "endTimeMs": int(end)}
        if not redaction:
            entity["type"] = label
        out.append(entity)
    return out


class TranscriptShaper:
    """Turns one meeting's utterance events into Transcript frames (one per subscriber: it keeps
    the partials seen, for stabilisation)."""

    def __init__(self, origin_ms: Any) -> None:
        self._origin_ms = origin_ms  # (participant id) -> epoch ms where its timeline began
        self._seen: dict[str, list[list[str]]] = {}  # result id -> token lists of its partials so far

    def frame(self, event: UtteranceEvent, settings: MeetingTranscription | None) -> dict[str, Any] | None:
        if not event.text.strip() and event.kind == "partial":
            return None  # a withdrawn partial: the JS SDK has no way to say it; the final never comes
        rid = result_id(event)
        origin = self._origin_ms(event.participant)
        start, end = origin + event.start_ms, origin + max(event.end_ms, event.start_ms)
        # Redaction or identification as the event was produced, never the meeting's settings now:
        # after an update (or a stop), an interval's last events keep the mode they were made under.
        redact = event.redaction_output == "redacted"
        identify = event.redaction_output == "redacted_and_unredacted"
        original = event.unredacted_text if identify else None  # a redacted event's original is never read
        shown = original if original is not None else event.text
        words = _word_tokens([Word(w.text, int(origin + w.start_ms), int(origin + w.end_ms), w.confidence)
                              for w in event.words or ()])
        timed = _timed(shown, words, start, end)
        stable = self._stability(rid, [t for t, *_ in timed], event.kind == "final", settings)
        attendee = {"attendeeId": event.participant, "externalUserId": event.external_id}
        items = []
        for i, (tok, s, e, conf) in enumerate(timed):
            item: dict[str, Any] = {"type": "punctuation" if _PUNCT.fullmatch(tok) else "pronunciation",
                                    "content": tok, "startTimeMs": int(s), "endTimeMs": int(e), "attendee": attendee}
            if conf is not None:
                item["confidence"] = round(conf, 4)
            if stable is not None:
                item["stable"] = stable[i]
            items.append(item)
        alternative: dict[str, Any] = {"transcript": shown, "items": items}
        if identify or redact:
            labels = [(s, e) for tok, s, e, _ in words if _LABEL.fullmatch(tok)] or [(start, end)]
            alternative["entities"] = entities(event.text, original, labels, redact)
        result = {"resultId": rid, "channelId": "", "isPartial": event.kind == "partial",
                  "startTimeMs": int(start), "endTimeMs": int(end),
                  "languageCode": settings.language if settings else "en-US", "alternatives": [alternative]}
        return {"transcript": {"results": [result]}}

    def _stability(self, rid: str, tokens: list[str], final: bool, settings: MeetingTranscription | None) -> list[bool] | None:
        if settings is None or not settings.stabilize:
            return None
        if final:
            self._seen.pop(rid, None)
            return [True] * len(tokens)
        history = self._seen.setdefault(rid, [])
        history.append(tokens)
        del history[:-settings.stable_after]
        flags, ok = [], len(history) >= settings.stable_after
        for i, tok in enumerate(tokens):
            ok = ok and all(len(h) > i + 1 and h[i] == tok for h in history)  # a last word may still grow
            flags.append(ok)
        if len(self._seen) > 256:  # finals that never came (withdrawn partials)
            self._seen.pop(next(iter(self._seen)))
        return flags
