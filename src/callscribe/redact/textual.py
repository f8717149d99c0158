"""Entities that are words, not digit runs: email addresses and passwords."""

from __future__ import annotations

import re

from .detectors import Utterance
from .normalize import Token

_EMAIL_SEPS = {"dot": ".", "period": ".", "underscore": "_", "dash": "-", "hyphen": "-", ".": ".",
               "_": "_", "-": "-"}
_TLDS = {"com", "net", "org", "edu", "gov", "io", "co", "us", "uk", "ca", "info", "biz", "me", "ai",
         "de", "fr", "au", "app", "dev", "mil", "ie", "nz", "in"}
_EMAIL_LEFT_STOP = {"me", "us", "him", "her", "them", "you", "it", "is", "email", "address", "mail",
                    "my", "the", "reach", "there", "here", "be", "was", "at", "its", "it's", "to",
                    "as", "from", "for", "and", "or", "with", "under", "using", "use", "via", "that's",
                    "i", "it's", "sure", "yes", "yeah", "okay", "ok", "so", "um", "uh", "send", "sent"}
_WRITTEN_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PASSWORD_LEAD = {"is", "was", "it's", "its", "it", "be", "would", "will", "should", ":", "=", "-",
                  "'s", "s", "that's", "of", "mine", "my", "password", "yes", "yeah", "sure", "okay",
                  "ok", "um", "uh", "so", "oh", "the", "right", ",", "please", "again"}
# A verb that asks for the password when only these words stand between it and the cue
# ("I'll need the password on the account", "please give me your password"), unlike
# "I need to change my password" or "I can reset the password".
_REQUEST_WORDS = {"need", "needs", "give", "provide", "tell", "spell", "confirm", "verify", "read",
                  "say", "what's", "whats", "enter", "type", "share", "get"}
_REQUEST_GAP = {"me", "us", "the", "your", "that", "this", "account", "online", "current", "account's",
                "login", "portal", "app", "website", "voicemail", "a"}
_CLAUSE_NEXT = {"my", "the", "i", "it", "that", "that's", "your", "then", "also", "what", "can", "is", "and"}


def find_emails(u: Utterance) -> list[tuple[int, int]]:
    """Written ('j.smith@gmail.com') and spoken ('john dot smith at gmail dot com') addresses."""
    spans = [(m.start(), m.end()) for m in _WRITTEN_EMAIL.finditer(u.text)]
    toks = u.tokens
    for k, t in enumerate(toks):
        if t.low != "at":
            continue
        # domain: word (sep word)+ ending in a TLD
        j, last_tld = k + 1, -1
        if j >= len(toks) or toks[j].kind == "punct":
            continue
        j += 1
        while j + 1 < len(toks) and toks[j].low in ("dot", "period", ".") and toks[j + 1].kind != "punct":
            if toks[j + 1].low in _TLDS:
                last_tld = j + 1
            j += 2
        if last_tld < 0:
            continue
        # local part: backwards over words joined by dot/underscore/dash, or spelled single letters
        i = k - 1
        if i < 0 or toks[i].kind == "punct" or toks[i].low in _EMAIL_LEFT_STOP:
            continue
        first = i
        while first > 0:
            p = toks[first - 1]
            if p.low in _EMAIL_SEPS and first >= 2 and toks[first - 2].kind != "punct" \
                    and toks[first - 2].low not in _EMAIL_LEFT_STOP:
                first -= 2
            elif len(toks[first].text) == 1 and p.kind != "punct" and len(p.text) == 1 \
                    and p.low not in ("a", "i"):
                first -= 1
            elif p.kind != "punct" and p.end == toks[first].start:
                first -= 1
            else:
                break
        # Spoken local parts come in up to three pieces: "jane doe", "j smith 42", "dana 88".
        pieces = 1
        while first == i - pieces + 1 and pieces < 3 and first > 0:
            p = toks[first - 1]
            if p.kind == "punct" or p.low in _EMAIL_LEFT_STOP or (p.low in ("a", "i") and len(p.text) == 1):
                break
            first -= 1
            pieces += 1
        spans.append((toks[first].start, toks[last_tld].end))
    return spans


def _sentence_end(toks: list[Token], k: int, text: str) -> bool:
    t = toks[k]
    return t.low in ("?", "!") or (t.low == "." and (t.end >= len(text) or text[t.end].isspace()))


def value_after(u: Utterance, k: int) -> tuple[int, int] | None:
    """Character span of the value said after token k up to the end of its sentence or clause."""
    toks = u.tokens
    j = k + 1
    while j < len(toks) and toks[j].low in _PASSWORD_LEAD and not _sentence_end(toks, j, u.text):
        j += 1
    if j >= len(toks) or _sentence_end(toks, j, u.text):
        return None
    end = j
    m = j
    while m < len(toks) and not _sentence_end(toks, m, u.text):
        if toks[m].low in ("and", "but") and m + 1 < len(toks) and toks[m + 1].low in _CLAUSE_NEXT \
                and m > j:
            break
        if toks[m].kind != "punct" or toks[m].low not in (",", ";"):
            end = m
        m += 1
    return toks[j].start, toks[end].end


def find_passwords(u: Utterance) -> tuple[list[tuple[int, int]], str | None]:
    """Spans said after a password cue, and whether a cue was left open for the next turn:
    "other" when it was asked ("what is your password?", "I'll need the password on the
    account"), "any" after a bare "my password is"."""
    spans: list[tuple[int, int]] = []
    open_for: str | None = None
    for c in u.cues:
        if c.entity != "PASSWORD":
            continue
        rest = u.tokens[c.last + 1:]
        stated = bool(rest) and rest[0].low in ("is", "it's", "'s", ":", "was", "=") or \
            u.tokens[c.last].low.endswith("'s")
        end = next((u.tokens[k] for k in range(c.last + 1, len(u.tokens))
                    if _sentence_end(u.tokens, k, u.text)), None)
        asked = end is not None and end.low == "?"
        if not stated and not asked:
            k = c.first - 1
            while k >= 0 and u.tokens[k].low in _REQUEST_GAP:
                k -= 1
            asked = k >= 0 and u.tokens[k].low in _REQUEST_WORDS
        span = value_after(u, c.last) if stated or not asked else None
        if span is not None:
            spans.append(span)
        if asked:
            open_for = "other"
        elif span is None and stated:
            open_for = "any"
    return spans, open_for


def runs_to_open_end(u: Utterance, end: int) -> bool:
    """A value ending at `end` reaches the end of an utterance cut off without closing punctuation
    ("um, it's Maple" then "88, then a dollar sign"): the next turn of the speaker may continue it."""
    rest = u.text[end:].strip()
    return not rest and not u.text.rstrip().endswith((".", "?", "!"))
