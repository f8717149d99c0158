"""Held-out redaction corpus (tests/redaction_heldout.py) run through the call redactor, one case per snippet."""

from __future__ import annotations

import pytest

from redaction_heldout import SNIPPETS, A, C, Snippet, parse, redactor_for, run_snippet


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.sid for s in SNIPPETS])
def test_heldout_snippet(snippet):
    problems = []
    for turn, out, r in run_snippet(snippet, redactor_for(snippet)):
        if r.leaked:
            problems.append(f"leaked {r.leaked} in {out!r}")
        if r.overmasked:
            problems.append(f"over-masked {r.overmasked} in {out!r}")
    assert not problems, "\n".join(problems)


def test_heldout_corpus_size():
    assert len(SNIPPETS) >= 120
    assert len({s.sid for s in SNIPPETS}) == len(SNIPPETS)


# Found while fixing (after reading the engine), so not part of the held-out figures: year-shaped
# read-outs in a sensitive context, number words inside "last four", password requests.
_REGRESSIONS = [
    ("pin-year-shaped", [(A, "What's your PIN?"), (C, "Uh, [2011].")]),
    ("pin-year-same-turn", [(C, "My PIN is [1984].")]),
    ("pin-year-spoken", [(C, "PIN is [twenty twenty four].")]),
    ("cid-year-shaped", [(A, "And the four digits on the front?"), (C, "[2019].")]),
    ("cvv-year-spoken", [(A, "And the three digits on the back?"), (C, "[Nineteen eighty].")]),
    ("ssn-last-four-year", [(C, "The last four of my social are [1999].")]),
    ("card-ending-in-year", [(C, "The card ending in [2019].")]),
    ("last-four-word-not-digit", [(C, "Last four [8174].")]),
    ("year-after-year-word-stays", [(C, "I've had this card since {2019}.")]),
    ("year-and-ending-in", [(C, "Card ending in [1234], and I've been a customer since {2010}.")]),
    ("password-request-then-answer", [(A, "Please give me your password."), (C, "Sure, it's [tiger 99].")]),
    ("password-not-requested", [(C, "I need to change my password."), (A, "Sure, I'll {send} a {link}.")]),
    ("password-reset-offer", [(A, "I can reset the password for you."), (C, "{Great}, {thanks}.")]),
    ("version-three-part", [(C, "Android version {14.1.2} on my phone.")]),
    ("version-not-phone", [(C, "My number is [5.5.5867.5309].")]),
]


@pytest.mark.parametrize("turns", [t for _, t in _REGRESSIONS], ids=[i for i, _ in _REGRESSIONS])
def test_found_while_fixing(turns):
    snippet = Snippet("regression", "regression", [parse(role, text) for role, text in turns])
    for turn, out, r in run_snippet(snippet, redactor_for(snippet)):
        assert not r.leaked and not r.overmasked, (turn.text, out, r.leaked, r.overmasked)
