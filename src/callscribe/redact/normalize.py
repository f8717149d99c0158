"""Speech-to-digits normalisation with an offset map back to the original text.

A recogniser writes the same card number as "4111 1111 1111 1111", "41, 1, 1, 1, ...",
"4-1-1-1-...", "5.5.5867" or "four one one one, double one ...". Detectors need the digit string;
masking needs to know which characters of the original text produced it. So the text is tokenised
once, spoken numbers become digit *atoms* that remember their character span, and atoms separated
only by separators ("," "-" "." "/" "uh" "dash" ...) are joined into *runs*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"[A-Za-z]+(?:['\u2019][A-Za-z]+)*|\d+|\S")

UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90,
}
_ZERO_WORDS = {"oh", "o"}  # zero only between/next to other digits ("oh four", not "oh, I see")
_REPEAT = {"double": 2, "triple": 3}
_NUMBER_WORDS = set(UNITS) | set(TEENS) | set(TENS) | {"hundred", "thousand"}
ORDINAL_WORDS = {
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth", "twentieth", "thirtieth",
}
ORDINAL_SUFFIXES = {"st", "nd", "rd", "th"}
# Tokens allowed between two digit atoms of one run: what recognisers and people put between digits.
RUN_SEPARATORS = {",", "-", "\u2013", "\u2014", ".", "/", "(", ")"}  # ":" only in "H:MM" (see find_runs)
RUN_SEPARATOR_WORDS = {"dash", "hyphen", "slash", "uh", "um", "umm", "er", "erm", "ah", "hmm"}


@dataclass(frozen=True)
class Token:
    text: str
    low: str
    start: int
    end: int
    kind: str  # "word", "num" or "punct"


@dataclass(frozen=True)
class Atom:
    """Digits produced by one numeral or one spoken number ("27" from "twenty seven")."""

    digits: str
    start: int  # character span in the original text
    end: int
    first: int  # token index span (inclusive)
    last: int
    spoken: bool


@dataclass(frozen=True)
class Run:
    """Atoms joined by separators only: one number as read out."""

    atoms: tuple[Atom, ...]
    seps: tuple[str, ...]  # the separator text between consecutive atoms ("" when only spaces)

    @property
    def digits(self) -> str:
        return "".join(a.digits for a in self.atoms)

    @property
    def start(self) -> int:
        return self.atoms[0].start

    @property
    def end(self) -> int:
        return self.atoms[-1].end

    @property
    def first(self) -> int:
        return self.atoms[0].first

    @property
    def last(self) -> int:
        return self.atoms[-1].last

    @property
    def written_groups(self) -> tuple[int, ...]:
        """Lengths of the numerals as written ("4111 1111" -> (4, 4)); empty if any atom is spoken."""
        if any(a.spoken for a in self.atoms):
            return ()
        return tuple(len(a.digits) for a in self.atoms)


def tokenize(text: str) -> list[Token]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        t = m.group()
        kind = "num" if t[0].isdigit() else ("word" if t[0].isalpha() else "punct")
        out.append(Token(t, t.lower().replace("\u2019", "'"), m.start(), m.end(), kind))
    return out


def _is_numeric_token(tok: Token | None) -> bool:
    return tok is not None and (
        tok.kind == "num" or tok.low in _NUMBER_WORDS or tok.low in _REPEAT
    )


class _Compound:
    """A spoken number being built from words: 'two thousand twenty seven' -> 2027."""

    def __init__(self, value: int, state: str, first: int) -> None:
        self.big = 0
        self.small = value
        self.state = state
        self.first = first
        self.last = first

    @property
    def digits(self) -> str:
        return str(self.big + self.small)


def _spoken_atoms(tokens: list[Token], first: int, last: int) -> list[Atom]:
    """Atoms for the number words tokens[first..last] (hyphens and 'and' allowed inside).

    The grammar is the usual greedy one (it agrees with text2num's alpha2digit, which the tests use
    as an oracle), plus what speech needs: 'oh' for zero, 'double'/'triple' repeats.
    """
    atoms: list[Atom] = []
    cur: _Compound | None = None
    repeat = 1
    repeat_first = -1

    def close() -> None:
        nonlocal cur
        if cur is not None:
            atoms.append(Atom(cur.digits, tokens[cur.first].start, tokens[cur.last].end,
                              cur.first, cur.last, True))
            cur = None

    for i in range(first, last + 1):
        w = tokens[i].low
        if tokens[i].kind == "punct" or w == "and" or w == "a":
            continue
        if w in _REPEAT:
            close()
            repeat, repeat_first = _REPEAT[w], i
            continue
        if w in UNITS or w in _ZERO_WORDS:
            v = UNITS.get(w, 0)
            if repeat > 1:
                close()
                atoms.append(Atom(str(v) * repeat, tokens[repeat_first].start, tokens[i].end,
                                  repeat_first, i, True))
                repeat = 1
                continue
            if cur is not None and v and cur.state in ("tens", "hundred", "thousand", "h_tens"):
                cur.small += v
                cur.state = "done"
                cur.last = i
            else:
                close()
                cur = _Compound(v, "unit", i)
        elif w in TEENS:
            if cur is not None and cur.state in ("hundred", "thousand"):
                cur.small += TEENS[w]
                cur.state, cur.last = "done", i
            else:
                close()
                cur = _Compound(TEENS[w], "teen", i)
        elif w in TENS:
            if cur is not None and cur.state in ("hundred", "thousand"):
                cur.small += TENS[w]
                cur.state, cur.last = "h_tens", i
            else:
                close()
                cur = _Compound(TENS[w], "tens", i)
        elif w == "hundred":
            if cur is not None and cur.state in ("unit", "teen", "tens", "done") and cur.small % 100:
                cur.small = (cur.small % 100) * 100 if cur.big else cur.small * 100
                cur.state, cur.last = "hundred", i
            else:
                close()
                cur = _Compound(100, "hundred", i)
        elif w == "thousand":
            if cur is not None and cur.small and not cur.big:
                cur.big, cur.small = cur.small * 1000, 0
                cur.state, cur.last = "thousand", i
            else:
                close()
                cur = _Compound(0, "thousand", i)
                cur.big = 1000
    close()
    return atoms


def find_atoms(tokens: list[Token], skip: set[int] | None = None) -> list[Atom]:
    """All digit atoms in token order. Tokens in `skip` (cue phrases like 'three digits') are not numbers."""
    skip = skip or set()
    atoms: list[Atom] = []
    n = len(tokens)
    i = 0
    while i < n:
        tok = tokens[i]
        if i in skip:
            i += 1
            continue
        if tok.kind == "num":
            nxt = tokens[i + 1] if i + 1 < n else None
            if nxt is not None and nxt.start == tok.end and nxt.low in ORDINAL_SUFFIXES:
                i += 2  # "3rd", "21st": an ordinal, not a digit read-out
                continue
            atoms.append(Atom(tok.text, tok.start, tok.end, i, i, False))
            i += 1
            continue
        if tok.low in _NUMBER_WORDS or tok.low in _REPEAT or tok.low in _ZERO_WORDS or (
            tok.low == "a" and i + 1 < n and tokens[i + 1].low in ("hundred", "thousand")
        ):
            # Maximal stretch of number words ('and' and '-' allowed inside a compound).
            j = i
            while j + 1 < n and (j + 1) not in skip:
                nt = tokens[j + 1]
                if nt.low in _NUMBER_WORDS or nt.low in _REPEAT or nt.low in _ZERO_WORDS:
                    j += 1
                elif nt.low in ("and", "-") and j + 2 < n and tokens[j + 2].low in _NUMBER_WORDS \
                        and (nt.low == "-" or tokens[j].low in ("hundred", "thousand")):
                    j += 1
                else:
                    break
            words = [k for k in range(i, j + 1) if tokens[k].kind == "word"]
            # 'oh'/'o' alone or at an edge is an interjection unless a digit is next to it.
            while words and tokens[words[0]].low in _ZERO_WORDS:
                prev = tokens[words[0] - 1] if words[0] > 0 else None
                if len(words) > 1 or _is_numeric_token(prev):
                    break
                words.pop(0)
            if words and tokens[words[-1]].low in _ZERO_WORDS and len(words) == 1:
                nxt = tokens[words[-1] + 1] if words[-1] + 1 < n else None
                if not _is_numeric_token(nxt):
                    words.pop()
            if words and tokens[words[-1]].low in _REPEAT:
                words.pop()
            if words and not (len(words) == 1 and tokens[words[0]].low == "a"):
                atoms.extend(_spoken_atoms(tokens, words[0], words[-1]))
            i = j + 1
            continue
        i += 1
    return atoms


def _clock_join(text: str, prev: Atom, atom: Atom) -> bool:
    """'3:30', '12:34', '3:71': one to two written digits, a bare colon, two written digits.

    Joined into one run so that detectors see the whole number: after a CVV or PIN question
    "3:71" is the code read out, elsewhere "3:30" is a clock time (detectors decide which)."""
    return not prev.spoken and not atom.spoken and text[prev.end:atom.start] == ":" \
        and 1 <= len(prev.digits) <= 2 and len(atom.digits) == 2


def find_runs(text: str, tokens: list[Token], atoms: list[Atom]) -> list[Run]:
    """Join atoms separated only by whitespace, separator punctuation or fillers into runs.

    A clock form "H:MM" is a run of its own: two atoms joined by ':', nothing else joined to it.
    """
    runs: list[Run] = []
    cur: list[Atom] = []
    seps: list[str] = []
    for atom in atoms:
        if cur:
            if len(cur) == 1 and _clock_join(text, cur[0], atom):
                cur.append(atom)
                seps.append(":")
                continue
            prev = cur[-1]
            between = tokens[prev.last + 1: atom.first]
            punct = [t for t in between if t.kind == "punct"]
            ok = ":" not in seps and len(between) <= 2 and len(punct) <= 1 and all(
                t.low in RUN_SEPARATORS or t.low in RUN_SEPARATOR_WORDS for t in between
            )
            if ok:
                cur.append(atom)
                seps.append(text[prev.end:atom.start].strip())
                continue
            runs.append(Run(tuple(cur), tuple(seps)))
        cur, seps = [atom], []
    if cur:
        runs.append(Run(tuple(cur), tuple(seps)))
    return runs
