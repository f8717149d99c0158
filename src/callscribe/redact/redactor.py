"""Per-call redaction: context across utterances, masking of text and word tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..asr.types import Word
from .cues import SAFE
from .detectors import Utterance, classify_run, luhn_chains, run_exempt
from .normalize import TEENS, TENS, UNITS
from .policy import RedactionPolicy
from .textual import find_emails, find_passwords, runs_to_open_end, value_after

# A topic named by a cue ("what is the security code?") applies to this many following finals
# that carry content (backchannels like "okay" or "mm-hm" do not use it up).
CONTEXT_FINALS = 2
_CUE_WINDOW_AFTER = 8  # tokens: "3 7 1 is my security code"
_DIGIT_ENTITIES = ("CREDIT_CARD_NUMBER", "DIGITS", "CVV", "PIN", "SSN", "PHONE_NUMBER")
_NUMBERISH = set(UNITS) | set(TEENS) | set(TENS) | {"oh", "double", "triple", "hundred", "thousand"}


@dataclass(frozen=True)
class Span:
    entity: str
    start: int  # character offsets in the original text
    end: int


@dataclass(frozen=True)
class RedactionResult:
    text: str
    words: tuple[Word, ...]
    spans: tuple[Span, ...]

    @property
    def changed(self) -> bool:
        return bool(self.spans)


class CallRedactor:
    """One per call (shared by both legs of the call): carries context across utterances, so a card
    read over two turns is still a card, and 'what is your security code?' from the agent makes the
    customer's next '3 7 1' a CVV. Not thread-safe; one event loop drives it."""

    def __init__(self, policy: RedactionPolicy) -> None:
        self.policy = policy
        self._expect: dict[str, int] = {}  # entity (or SAFE) -> finals left; insertion order = recency
        self._tail: dict[str | None, int] = {}  # role -> digits of a read-out left open at the end of its last final
        self._tail_at: dict[str | None, int] = {}  # role -> _content_finals when that read-out was left open
        self._content_finals = 0  # finals with content so far (backchannels not counted)
        self._password_open: tuple[str | None, str] | None = None  # (role that asked, 'other', 'any' or 'same')

    # ---- public -------------------------------------------------------------------------------

    def redact_final(self, text: str, words: Sequence[Word] = (), *, role: str | None = None) -> RedactionResult:
        u = Utterance.analyse(text)
        spans, tail = self._detect(u, role, partial=False)
        self._remember(u, role, spans, tail)
        return RedactionResult(self._render(text, spans), self._mask_words(text, words, spans), tuple(spans))

    def mask_partial(self, text: str, *, role: str | None = None) -> str:
        u = Utterance.analyse(text)
        spans, _ = self._detect(u, role, partial=True)
        return self._render(text, spans)

    # ---- detection ----------------------------------------------------------------------------

    def _candidates(self, u: Utterance, first: int, last: int) -> list[str]:
        """Context entities for tokens first..last, nearest first: a cue before it in the same
        utterance, then a sensitive cue just after it, then other cues, then earlier turns."""
        before = sorted((c for c in u.cues if c.last < first), key=lambda c: -c.last)
        after = sorted((c for c in u.cues if c.first > last and c.entity != SAFE
                        and c.first - last <= _CUE_WINDOW_AFTER), key=lambda c: c.first)
        out = [c.entity for c in before[:1]] + [c.entity for c in after]
        out += [c.entity for c in before[1:] if c.entity != SAFE]
        out += [e for e in reversed(self._expect) if e not in out]
        return out

    def _detect(self, u: Utterance, role: str | None, *, partial: bool) -> tuple[list[Span], int]:
        p = self.policy
        on = p.entities
        spans: list[Span] = []
        if "EMAIL" in on:
            spans += [Span("EMAIL", s, e) for s, e in find_emails(u)]
        if "PASSWORD" in on:
            found, _ = find_passwords(u)
            spans += [Span("PASSWORD", s, e) for s, e in found]
            if self._password_wanted(role):
                v = value_after(u, -1)
                if v is not None:
                    spans.append(Span("PASSWORD", *v))
        for first, last, start, end in u.dates:
            for e in self._candidates(u, first, last):
                if e == SAFE:
                    break
                if e in ("DOB", "CARD_EXPIRY") and e in on:
                    spans.append(Span(e, start, end))
                    break
        carried = self._tail.get(role, 0)
        # The number left open is still being read out only if no one else has said anything of
        # substance since (a backchannel does not close it; "I can book you at 9:30" does). It still
        # counts towards a card's length either way.
        fresh = carried if self._tail_at.get(role) == self._content_finals else 0
        tail = 0
        chained = luhn_chains(u) if "CREDIT_CARD_NUMBER" in on and len(u.runs) > 1 else set()
        prev_read: tuple[int, str] | None = None  # (index, entity) of the previous run if masked
        for k, run in enumerate(u.runs):
            covered = any(s.start <= run.start and run.end <= s.end for s in spans)
            lead = k == 0 and carried > 0 and u.is_leading(run)
            trailing = k == len(u.runs) - 1 and u.is_trailing(run)
            entity = None
            cands = self._candidates(u, run.first, run.last)
            # Does this run continue a read-out: the speaker's open number from the last turn, or a
            # masked run just before it in this utterance ("7140, uh, and 28.69")?
            if lead:
                open_seq = fresh
            elif prev_read is not None and u.joined_by_fillers(u.runs[prev_read[0]], run):
                open_seq = len(u.runs[prev_read[0]].digits)
            else:
                open_seq = 0
            # An amount or a time, in this context: a bare "4.9" or "3:30" is one only where no
            # read-out is expected (see detectors.exempt).
            kept = run_exempt(u, run, cands, on, open_seq)
            if not covered and k in chained:
                entity = "CREDIT_CARD_NUMBER"
                spans.append(Span(entity, run.start, run.end))
            elif not covered:
                entity = classify_run(u, run, cands, on, p.digit_run_lengths, p.long_run_min,
                                      carried=carried if lead else 0, guess_prefix=trailing,
                                      open_seq=open_seq)
                if entity is None and open_seq and not lead and not kept and prev_read is not None \
                        and prev_read[1] in _DIGIT_ENTITIES:
                    entity = prev_read[1]  # "7140 and 28.69": the rest of the same read-out
                if entity is None and partial and trailing and len(run.digits) >= 2 and not kept:
                    # The read-out may still be growing: hide it until the final decides.
                    entity = next((e for e in _DIGIT_ENTITIES if e in on), None)
                if entity is not None:
                    spans.append(Span(entity, run.start, run.end))
            if entity is None and covered:
                entity = next((s.entity for s in spans if s.start <= run.start and run.end <= s.end), None)
            # The ASAPP digit rule masks by length alone: it says nothing about a read-out going on.
            prev_read = (k, entity) if entity is not None and entity != "DIGITS" else None
            # Any read-out left at the end of a turn may continue in the next one (a 9-digit
            # "SSN" may be the first half of a card): only amounts and times are not continued.
            if trailing and not kept:
                tail = len(run.digits) + (carried if lead and len(u.runs) == 1 else 0)
                if tail >= 19:
                    tail = 0  # longer than any card: what follows is something else
        return _merge(spans), tail

    def _password_wanted(self, role: str | None) -> bool:
        if self._password_open is None:
            return False
        asker, mode = self._password_open
        if mode == "same":
            return role is None or asker is None or role == asker
        return mode == "any" or role is None or asker is None or role != asker

    def _remember(self, u: Utterance, role: str | None, spans: list[Span], tail: int) -> None:
        content = bool(u.runs) or sum(t.kind == "word" for t in u.tokens) >= 3
        if content:
            self._content_finals += 1
            for e in list(self._expect):
                self._expect[e] -= 1
                if self._expect[e] <= 0:
                    del self._expect[e]
        if self._password_wanted(role) and content:
            self._password_open = None
        for c in u.cues:
            if c.entity not in ("PASSWORD", "EMAIL"):
                self._expect.pop(c.entity, None)
                self._expect[c.entity] = CONTEXT_FINALS
        open_for = find_passwords(u)[1] if "PASSWORD" in self.policy.entities else None
        if open_for is not None:
            self._password_open = (role, open_for)
        elif any(s.entity == "PASSWORD" and runs_to_open_end(u, s.end) for s in spans):
            self._password_open = (role, "same")  # cut off mid-password: the speaker goes on
        if tail:
            self._tail[role] = tail
            self._tail_at[role] = self._content_finals
        else:
            self._tail.pop(role, None)
            self._tail_at.pop(role, None)

    # ---- output -------------------------------------------------------------------------------

    def _render(self, text: str, spans: Sequence[Span]) -> str:
        if not spans:
            return text
        if self.policy.style == "label":
            out, pos = [], 0
            for s in spans:
                out += [text[pos:s.start], self.policy.label(s.entity)]
                pos = s.end
            return "".join(out) + text[pos:]
        chars = list(text)
        for s in spans:
            for i in range(s.start, s.end):
                if chars[i].isalnum():
                    chars[i] = "#"
        return "".join(chars)

    def _mask_words(self, text: str, words: Sequence[Word], spans: Sequence[Span]) -> tuple[Word, ...]:
        if not spans:
            return tuple(words)
        out: list[Word] = []
        pos = 0
        labelled: set[int] = set()
        for w in words:
            core = w.text.strip()
            lead = w.text[: len(w.text) - len(w.text.lstrip())]
            at = text.find(core, pos) if core else -1
            if at < 0:
                # Not found in the text (the engine's words and text disagree): hide it if numeric.
                if core and (any(ch.isdigit() for ch in core) or core.lower().strip(".,?!") in _NUMBERISH):
                    masked = "".join("#" if ch.isalnum() else ch for ch in core)
                    out.append(replace(w, text=lead + masked))
                else:
                    out.append(w)
                continue
            end = at + len(core)
            pos = end
            hits = [(k, s) for k, s in enumerate(spans) if s.start < end and at < s.end]
            if not hits:
                out.append(w)
                continue
            if self.policy.style == "label":
                pieces, i = [], at
                for k, s in hits:
                    lo, hi = max(s.start, at), min(s.end, end)
                    pieces.append(text[i:lo])
                    if k not in labelled:
                        pieces.append(self.policy.label(s.entity))
                        labelled.add(k)
                    i = hi
                pieces.append(text[i:end])
                out.append(replace(w, text=lead + "".join(pieces)))
            else:
                chars = list(core)
                for _, s in hits:
                    for i in range(max(s.start, at), min(s.end, end)):
                        if chars[i - at].isalnum():
                            chars[i - at] = "#"
                out.append(replace(w, text=lead + "".join(chars)))
        return tuple(out)


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, non-overlapping spans; where two overlap the earlier-starting entity names both."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and s.start < out[-1].end:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].entity, out[-1].start, s.end)
            continue
        out.append(s)
    return out
