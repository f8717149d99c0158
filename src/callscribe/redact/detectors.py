"""What a digit run is (card, CVV, phone, a time, an amount...), and date expressions.

Everything here is a pure function of one analysed utterance plus the candidate entities the
context suggests; the call-level memory lives in redactor.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cues import READOUT, SAFE, Cue, cue_tokens, find_cues
from .normalize import ORDINAL_SUFFIXES, ORDINAL_WORDS, TENS, Atom, Run, Token, find_atoms, find_runs, tokenize

CARD_MIN_DIGITS = 12  # PCI: any run this long is masked as a card, Luhn or not (ASR miscounts digits)

MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
    "oct": 10, "nov": 11, "dec": 12,
}
_AMBIGUOUS_MONTHS = {"may", "march", "mar", "jan", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_CURRENCY_SIGNS = {"$", "\u00a3", "\u20ac"}
_MONEY_WORDS = {"dollar", "dollars", "buck", "bucks", "cent", "cents", "euro", "euros", "usd", "quid",
                "grand"}
_UNIT_WORDS = _MONEY_WORDS | {
    "percent", "%", "per", "items", "item", "people", "persons", "minutes", "minute", "mins", "hours",
    "hour", "hrs", "days", "day", "weeks", "week", "months", "month", "years", "year", "times", "miles",
    "mile", "km", "kilometers", "feet", "foot", "inches", "inch", "pounds", "lbs", "kg", "kilos",
    "gigs", "gb", "mb", "megabytes", "gigabytes", "units", "boxes", "box", "pieces", "calls", "texts",
    "messages", "points", "stars", "channels", "lines", "devices", "phones", "packages", "rooms",
    "nights", "tickets", "seats", "degrees", "kids", "children", "members", "users", "employees",
    "customers", "bags", "bottles", "pairs", "seconds", "sec", "percentage", "installments",
    "payments", "orders", "accounts", "cards", "rings", "attempts", "tries", "locations", "stores",
    "miles", "gallons", "liters", "mph", "episodes", "pages", "bedrooms",
}
_TIME_BEFORE = {"at", "by", "around", "till", "until", "til", "before", "after", "from", "about",
                "between", "to", "past"}
_TIME_AFTER = {"am", "pm", "a", "p", "o'clock", "oclock", "tonight", "tomorrow", "today", "sharp",
               "this", "in", "eastern", "pacific", "central", "est", "pst", "cst"}
_YEAR_BEFORE = {"in", "since", "from", "until", "till", "til", "year", "of", "back", "by", "around",
                "before", "after", "during", "circa", "to", "through", "late", "early", "mid"}
_FILLERS = {"uh", "um", "umm", "er", "erm", "ah", "hmm", "and", "then", "so", "okay", "ok", "yeah",
            "yes", "the", "rest", "is", "it's", "its", "it", "continuing", "next", "that's", "last",
            "well", "oh", "right", "sorry", "um-hum"}
@dataclass
class Utterance:
    """One utterance, analysed once: tokens, cues, digit atoms and runs, date expressions."""

    text: str
    tokens: list[Token]
    cues: list[Cue]
    runs: list[Run]
    dates: list[tuple[int, int, int, int]] = field(default_factory=list)  # (first, last, start, end)

    @classmethod
    def analyse(cls, text: str) -> "Utterance":
        tokens = tokenize(text)
        cues = find_cues(tokens)
        atoms = find_atoms(tokens, cue_tokens(cues))
        runs = find_runs(text, tokens, atoms)
        u = cls(text, tokens, cues, runs)
        u.dates = _date_spans(tokens, atoms)
        return u

    def word_before(self, i: int) -> Token | None:
        for k in range(i - 1, -1, -1):
            if self.tokens[k].kind != "punct" or self.tokens[k].low in _CURRENCY_SIGNS:
                return self.tokens[k]
        return None

    def word_after(self, i: int) -> Token | None:
        for k in range(i + 1, len(self.tokens)):
            if self.tokens[k].kind != "punct" or self.tokens[k].low == "%":
                return self.tokens[k]
        return None

    def is_trailing(self, run: Run) -> bool:
        """Nothing but punctuation or fillers after the run: it may continue in the next turn."""
        return all(t.kind == "punct" or t.low in _FILLERS for t in self.tokens[run.last + 1:])

    def joined_by_fillers(self, a: Run, b: Run) -> bool:
        """Only punctuation or fillers between two runs ("7140, uh, and 28.69")."""
        return all(t.kind == "punct" or t.low in _FILLERS for t in self.tokens[a.last + 1: b.first])

    def is_leading(self, run: Run) -> bool:
        return all(t.kind == "punct" or t.low in _FILLERS for t in self.tokens[: run.first])

    def in_date(self, run: Run) -> tuple[int, int, int, int] | None:
        for d in self.dates:
            if run.first <= d[1] and run.last >= d[0]:
                return d
        return None


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return len(digits) > 1 and total % 10 == 0


def luhn_chains(u: Utterance, max_gap: int = 4) -> set[int]:
    """Indices of runs that only together form a Luhn-valid card ("4111 1111, and then 1111 1111").

    Words between the pieces break a run; Luhn is what makes joining them safe to assert.
    """
    runs, out = u.runs, set[int]()
    for i in range(len(runs)):
        acc = runs[i].digits
        for j in range(i + 1, len(runs)):
            # Only a marked amount or time breaks the chain: Luhn is evidence enough against a
            # bare decimal ("4111 1111 1111 11.11").
            if runs[j].first - runs[j - 1].last - 1 > max_gap or hard_exempt(u, runs[j]):
                break
            acc += runs[j].digits
            if len(acc) > 19:
                break
            if len(acc) >= 13 and luhn_ok(acc):
                out.update(range(i, j + 1))
    return out


def _date_spans(tokens: list[Token], atoms: list[Atom]) -> list[tuple[int, int, int, int]]:
    """Date expressions built around a month name: 'April 2027', 'the 15th of March, 1985'."""
    atom_tok = {k: a for a in atoms for k in range(a.first, a.last + 1)}
    spans: list[tuple[int, int, int, int]] = []

    def datey(k: int) -> bool:
        t = tokens[k]
        return k in atom_tok or t.low in ORDINAL_WORDS or t.low in ORDINAL_SUFFIXES or t.low in TENS \
            or (t.kind == "num" and k + 1 < len(tokens) and tokens[k + 1].low in ORDINAL_SUFFIXES)

    def filler(k: int) -> bool:
        return tokens[k].low in ("the", "of", ",", "/", "-", "slash")

    for m, tok in enumerate(tokens):
        if tok.low not in MONTHS or (spans and m <= spans[-1][1]):
            continue
        lo = hi = m
        k = m - 1
        while k >= 0 and m - k <= 6 and (datey(k) or filler(k)):
            if datey(k):
                lo = k
            k -= 1
        k = m + 1
        while k < len(tokens) and k - m <= 8 and (datey(k) or filler(k)):
            if datey(k):
                hi = k
            k += 1
        if lo == hi == m:
            continue  # a month word with no number: 'in May', 'march on'
        if tok.low in _AMBIGUOUS_MONTHS and not ((m + 1 <= hi and datey(m + 1)) or (lo < m and datey(m - 1))):
            continue
        # widen to whole atoms
        for a in atoms:
            if a.first <= hi and a.last >= lo:
                lo, hi = min(lo, a.first), max(hi, a.last)
        spans.append((lo, hi, tokens[lo].start, tokens[hi].end))
    return spans


def _slash_date(run: Run) -> bool:
    if "/" not in run.seps or len(run.atoms) not in (2, 3):
        return False
    parts = [int(a.digits) for a in run.atoms]
    return 1 <= parts[0] <= 12 and (len(run.atoms) == 2 or 1 <= parts[1] <= 31)


def _plain(u: Utterance, a: Atom, b: Atom) -> str:
    return u.text[a.end:b.start]


# ---- exemptions: numbers that are amounts, times, quantities ---------------------------------
#
# Two kinds. A *hard* exemption is marked as an amount or a measure by the words around it
# ("$3.71", "3.71 dollars", "2.5 percent", "version 2.3", "at 3:30", "5:30 pm") and is kept
# whatever the context. A *soft* one has only its shape to go on: a dotted "3.71" or "4.9", a
# clock form "3:30", a time after a weak word ("to 12 34", "7 45 in"). The recogniser writes digit
# read-outs that way too ("5.5.5867", "4.9" for "four nine"), so a soft exemption holds only where
# nothing expects a read-out: no sensitive cue in the utterance or carried from earlier turns, and
# not the continuation of a number left open at the end of the speaker's last turn.

_STRONG_TIME_BEFORE = {"at", "by", "around", "till", "until", "til", "before", "after", "from",
                       "between"}
_STRONG_TIME_AFTER = {"am", "pm", "o'clock", "oclock", "sharp", "eastern", "pacific", "central",
                      "mountain", "est", "pst", "cst", "mst", "edt", "pdt", "cdt", "mdt"}


def hard_exempt(u: Utterance, run: Run) -> bool:
    """Money, percentages, quantities with a unit, versions, marked clock times: never read-outs."""
    before, after = u.word_before(run.first), u.word_after(run.last)
    if before is not None and before.low in _CURRENCY_SIGNS:
        return True
    if after is not None and after.low in _UNIT_WORDS and u.text[run.end:after.start].strip() in ("", "-"):
        return True  # "3.5 kilos", "2.5%", "12-month"; not "371, per the back of the card"
    if _is_version(run, before):
        return True
    if _is_decimal(u, run) and _amount_named(u, run):
        return True  # "my phone bill went up to 49.99", "the card was charged 12.99"
    return _is_time(u, run, before, after, strong=True)


# Words that name a sum of money, and the words that may stand between one and its amount.
_AMOUNT_WORDS = {"bill", "bills", "charge", "charged", "charges", "cost", "costs", "paid", "pay",
                 "paying", "fee", "fees", "price", "priced", "total", "balance", "refund", "refunded",
                 "owe", "owed", "amount", "deposit", "spent", "spend", "tax", "interest", "apr"}
_AMOUNT_LINK = {"is", "was", "were", "be", "been", "of", "about", "around", "roughly", "like", "just",
                "only", "to", "up", "down", "by", "went", "goes", "gone", "now", "it's", "its", "it",
                "me", "us", "you", "for", "an", "a", "extra", "another", "almost", "nearly", "over",
                "under", "than", "more", "less", "uh", "um"}


def _amount_named(u: Utterance, run: Run) -> bool:
    """A money word shortly before the number, with only linking words between ("bill went up to")."""
    seen = 0
    for k in range(run.first - 1, -1, -1):
        t = u.tokens[k]
        if t.kind == "punct":
            continue
        if t.low in _AMOUNT_WORDS:
            return True
        seen += 1
        if t.low not in _AMOUNT_LINK or seen > 4:
            return False
    return False


def soft_exempt(u: Utterance, run: Run) -> bool:
    """Shaped like a decimal or a clock time, with nothing around it to say so for sure."""
    if _is_decimal(u, run) or _is_clock(run):
        return True
    return _is_time(u, run, u.word_before(run.first), u.word_after(run.last), strong=False)


def exempt(u: Utterance, run: Run, readout: bool) -> bool:
    """Kept as an amount or a time: hard exemptions always, soft ones only where no read-out is expected."""
    return hard_exempt(u, run) or (not readout and soft_exempt(u, run))


def expects_readout(candidates: list[str], enabled: frozenset[str], carried: int = 0,
                    date_ok: bool = False) -> bool:
    """The context expects digits read out: the nearest cue that bears on it (this utterance first,
    then earlier turns) names an enabled digit entity or a read-out ("last four"), or the run
    continues a number left open at the end of the speaker's last turn. A SAFE cue ("order number")
    ends the search. With `date_ok`, a date-of-birth or expiry cue (enabled or not) means a date is
    expected, so a date-shaped number is a date."""
    for e in candidates:
        if e == SAFE:
            return False
        if e == READOUT:
            return True
        if date_ok and e in ("DOB", "CARD_EXPIRY"):
            return False
        if e in enabled and e in FITS:
            return True
    return carried > 0


def _is_decimal(u: Utterance, run: Run) -> bool:
    """'2.5', '49.99', '4.9': two written groups joined by a point, one or two digits after it."""
    return len(run.atoms) == 2 and bool(run.written_groups) and _plain(u, run.atoms[0], run.atoms[1]) == "." \
        and run.atoms[1].end - run.atoms[1].start <= 2


def _is_clock(run: Run) -> bool:
    """'3:30', '14:05' as written by the recogniser (normalize joins 'H:MM' into one run)."""
    if run.seps != (":",):
        return False
    hour, minutes = int(run.atoms[0].digits), int(run.atoms[1].digits)
    return hour <= 23 and minutes < 60


_VERSION_WORDS = {"version", "v", "ios", "android", "windows", "macos", "firmware", "update", "release"}


def _is_version(run: Run, before: Token | None) -> bool:
    """'version 2.3.1', 'iOS 17.4.1': dotted groups of one to three digits after a version word."""
    g = run.written_groups
    return before is not None and before.low in _VERSION_WORDS and 2 <= len(g) <= 4 \
        and all(x <= 3 for x in g) and all(sep == "." for sep in run.seps)


def _am_pm_after(u: Utterance, run: Run) -> bool:
    """'5:30 a.m.', '7 30 p m': the recogniser splits am/pm into letters."""
    rest = [t.low for t in u.tokens[run.last + 1: run.last + 5] if t.kind != "punct"]
    return len(rest) >= 2 and rest[0] in ("a", "p") and rest[1] == "m"


def _is_time(u: Utterance, run: Run, before: Token | None, after: Token | None, strong: bool) -> bool:
    """A clock time ("3:30", "five thirty", "at 7") marked by a word before or after it. `strong`:
    only by words that leave no doubt ("at", "until", "pm", "o'clock"); otherwise also by weak ones
    ("to", "about", "in", "today") that a read-out can sit next to ("change my PIN to 12 34")."""
    atoms = run.atoms
    if len(atoms) == 2:
        hour, minutes = atoms[0].digits, atoms[1].digits
    elif len(atoms) == 3 and atoms[1].digits == "0" and len(atoms[2].digits) == 1:
        hour, minutes = atoms[0].digits, "0" + atoms[2].digits  # "five oh five"
    elif len(atoms) == 1 and len(atoms[0].digits) <= 2:
        hour, minutes = atoms[0].digits, "00"
    else:
        return False
    clock = run.seps == (":",)
    if not (hour.isdigit() and len(minutes) == 2 and int(minutes) < 60
            and (1 <= int(hour) <= 12 or (clock and int(hour) <= 23))):
        return False
    if strong:
        return (before is not None and before.low in _STRONG_TIME_BEFORE) \
            or (after is not None and after.low in _STRONG_TIME_AFTER) or _am_pm_after(u, run)
    return (before is not None and before.low in _TIME_BEFORE) or (after is not None and after.low in _TIME_AFTER)


def year_like(u: Utterance, run: Run) -> bool:
    """A year in ordinary talk: 1900-2099 written as one number ("2019") or said as one
    ("twenty nineteen", "two thousand nineteen"), or after a year word ("in 2019", "the 1990s").
    Not when read digit by digit ("two oh one nine"). A sensitive context still wins over this."""
    d = run.digits
    if len(d) != 4 or not (1900 <= int(d) <= 2099):
        return False
    if [len(a.digits) for a in run.atoms] in ([4], [2, 2]):
        return True
    before = u.word_before(run.first)
    return len(run.atoms) <= 2 and before is not None and (before.low in _YEAR_BEFORE or before.low in MONTHS)


def year_introduced(u: Utterance, run: Run) -> bool:
    """Said as a year: after a year word ("since 2019", "back in 1990", "June 2028") that is not
    part of a cue ("ending in 1940" is a read-out)."""
    for k in range(run.first - 1, -1, -1):
        t = u.tokens[k]
        if t.kind == "punct":
            continue
        if t.low not in _YEAR_BEFORE and t.low not in MONTHS:
            return False
        return not any(c.first <= k <= c.last for c in u.cues if c.entity != SAFE)
    return False


def _readout_context(candidates: list[str], enabled: frozenset[str]) -> bool:
    """The context asks for a number read out (a PIN, a CVV, a card's last four...), not a year."""
    for e in candidates:
        if e == SAFE:
            return False
        if e == READOUT or (e in enabled and e in FITS and e not in ("DOB", "CARD_EXPIRY")):
            return True
    return False


def thousands_formatted(u: Utterance, run: Run) -> bool:
    """'1,299' or '12,000': an amount as the recogniser formats numbers, not digits read out."""
    g = run.written_groups
    return len(g) >= 2 and 1 <= g[0] <= 3 and all(x == 3 for x in g[1:]) and all(
        _plain(u, a, b) == "," for a, b in zip(run.atoms, run.atoms[1:]))


# ---- shapes ----------------------------------------------------------------------------------

def _nanp(d: str) -> bool:
    return len(d) == 10 and d[0] in "23456789" and d[3] in "23456789"


def phone_shape(run: Run) -> bool:
    d, g = run.digits, run.written_groups
    if g in ((3, 3, 4), (1, 3, 3, 4), (3, 4)):
        return True
    return _nanp(d) or (len(d) == 11 and d[0] == "1" and _nanp(d[1:]))


def ssn_shape(run: Run) -> bool:
    return run.written_groups == (3, 2, 4)


def _expiry_fits(run: Run, in_date: bool) -> bool:
    d = run.digits
    if in_date or "/" in run.seps:
        return True
    if len(d) == 4:
        return 1 <= int(d[:2]) <= 12
    if len(d) == 3:
        return d[0] != "0" and 20 <= int(d[1:]) <= 49
    return len(d) == 6 and 1 <= int(d[:2]) <= 12 and d[2:4] == "20"


FITS = {
    "CREDIT_CARD_NUMBER": lambda n: n >= 3,
    "CVV": lambda n: 2 <= n <= 5,
    "CARD_EXPIRY": lambda n: 3 <= n <= 6,
    "SSN": lambda n: 3 <= n <= 11,
    "PIN": lambda n: 3 <= n <= 8,
    "PHONE_NUMBER": lambda n: 3 <= n <= 15,
    "DOB": lambda n: 2 <= n <= 8,
    "BANK_ACCOUNT_NUMBER": lambda n: 4 <= n <= 17,
    "BANK_ROUTING": lambda n: 7 <= n <= 11,
}


def _open_carry(carried: int, candidates: list[str]) -> int:
    """Digits carried from the last turn count as an open read-out unless the nearest context is SAFE."""
    return 0 if candidates[:1] == [SAFE] else carried


def run_exempt(u: Utterance, run: Run, candidates: list[str], enabled: frozenset[str], carried: int = 0) -> bool:
    """`exempt` with the read-out expectation taken from the context, as classify_run decides it."""
    return exempt(u, run, expects_readout(candidates, enabled, _open_carry(carried, candidates)))


def classify_run(u: Utterance, run: Run, candidates: list[str], enabled: frozenset[str],
                 digit_lengths: frozenset[int], long_min: int, carried: int = 0,
                 guess_prefix: bool = False, open_seq: int | None = None) -> str | None:
    """The entity a digit run should be masked as, or None to keep it.

    `candidates` are context entities nearest first (SAFE stops the context); `carried` is the
    number of digits of the same read-out already seen at the end of the speaker's previous turn.
    `open_seq` (default: `carried`) is the number of digits of a read-out this run continues, for
    deciding whether a bare decimal or clock form is one (see `exempt`).
    """
    n = len(run.digits)
    total = n + carried
    if n >= CARD_MIN_DIGITS or (carried and total >= CARD_MIN_DIGITS and not hard_exempt(u, run)):
        if "CREDIT_CARD_NUMBER" in enabled:
            return "CREDIT_CARD_NUMBER"
        if "DIGITS" in enabled and n >= long_min:
            return "DIGITS"
    if run_exempt(u, run, candidates, enabled, carried if open_seq is None else open_seq):
        return None
    # "12/34" after "what's your PIN?" is the PIN, not a date; after "the expiry?" it is the date.
    date = u.in_date(run) is not None or (
        _slash_date(run) and not expects_readout(candidates, enabled, date_ok=True))
    if not date and year_like(u, run):
        # A year-shaped number is kept in ordinary talk, but not where a read-out is expected:
        # "my PIN is 1984", "the four digits on the front? 2019", "ending in 1940".
        date = year_introduced(u, run) or not _readout_context(candidates, enabled)
    for e in candidates:
        if e == SAFE:
            break
        if e not in enabled or e not in FITS or (date and e not in ("DOB", "CARD_EXPIRY")):
            continue
        if e == "CARD_EXPIRY" and not _expiry_fits(run, date):
            continue
        if FITS[e](n) or (e == "DOB" and date):
            return e
    if date:
        return None
    if ssn_shape(run) and "SSN" in enabled:
        return "SSN"
    if phone_shape(run) and "PHONE_NUMBER" in enabled:
        return "PHONE_NUMBER"
    if n == 9 and "SSN" in enabled:
        return "SSN"  # ASAPP: 9-digit numerics are always redacted (digits9ssn)
    if "DIGITS" in enabled and not thousands_formatted(u, run):
        if n in digit_lengths or n >= long_min:
            return "DIGITS"
        if len(run.atoms) > 1 and any(g in digit_lengths for g in run.written_groups):
            return "DIGITS"  # "4111 1111": each written group is itself a 4-digit numeric
    if guess_prefix and "CREDIT_CARD_NUMBER" in enabled and 6 <= total < CARD_MIN_DIGITS \
            and SAFE not in candidates[:1]:
        return "CREDIT_CARD_NUMBER"  # may be the first half of a card finished in the next turn
    return None
