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


# Regression cases written after the fact, from an end-to-end leak report (not part of the
# held-out figures): a dotted "3.71" or "4.9" was kept as a decimal, and a clock form "3:71",
# a slash form "12/34" or a time after a weak word ("to 12 34") as a time, before the context
# was looked at. The recogniser writes digit read-outs that way, so after a CVV, PIN, card or
# expiry question (or when continuing a number) they are read-outs; money, measures, versions
# and marked times stay, and so do plain decimals and clock times in ordinary talk.
_CARD_Q = (A, "Can I have your card number please.")
_CVV_Q = (A, "What is the security code on the back of the card?")
_PIN_Q = (A, "What is your PIN?")
_REGRESSIONS += [
    # leaks that were reported
    ("after-fact-cvv-dotted", [_CVV_Q, (C, "It's [3.71].")]),
    ("after-fact-expiry-dotted", [(A, "And the expiry date on the card?"), (C, "It expires [04.27].")]),
    ("after-fact-pin-dotted", [_PIN_Q, (C, "It is [43.21]")]),
    ("after-fact-card-dotted", [_CARD_Q, (C, "my card number is [4.91]")]),
    ("after-fact-card-split-dotted-tail", [_CARD_Q, (C, "[4916 3852 7140]"), (C, "[28.69]")]),
    # the same class, found while fixing
    ("after-fact-card-dotted-rest-same-turn", [(C, "[4916 3852 7140], uh, and [28.69].")]),
    ("after-fact-pin-dotted-groups", [_PIN_Q, (C, "It's [4.4.21].")]),
    ("after-fact-cvv-clock-form", [_CVV_Q, (C, "[3:71]")]),
    ("after-fact-cvv-clock-form-sentence", [_CVV_Q, (C, "It's [3:71].")]),
    ("after-fact-pin-clock-form-valid-time", [_PIN_Q, (C, "It's [12:34].")]),
    ("after-fact-expiry-clock-form", [(A, "What's the expiry?"), (C, "[4:27].")]),
    ("after-fact-pin-slash", [_PIN_Q, (C, "[12/34].")]),
    ("after-fact-cvv-slash", [(A, "What's the security code?"), (C, "[3/71].")]),
    ("after-fact-pin-after-to", [_PIN_Q, (C, "I want to change my PIN to [12 34].")]),
    ("after-fact-cvv-time-word-after", [(C, "The CVV is [7 45] in the back.")]),
    # near misses that must stay
    ("after-fact-percent-decimal", [(C, "The rate went up {2.5} percent.")]),
    ("after-fact-kilos-decimal", [(C, "It weighs {3.5} kilos.")]),
    ("after-fact-hours-decimal", [(C, "It took about {1.5} hours.")]),
    ("after-fact-plain-decimal", [(C, "The app has a {4.5} rating, and it costs {4.99} a month.")]),
    ("after-fact-plain-clock", [(C, "The meeting is {3:30}, or {14:30} your time.")]),
    ("after-fact-money-after-cvv-question", [_CVV_Q, (C, "Hold on, the charge was {$3.71}, right?")]),
    ("after-fact-money-word-after-cvv-question", [_CVV_Q, (C, "Wait, that's {3.71} dollars?")]),
    ("after-fact-percent-after-card", [(C, "My card gives {2.5} percent back.")]),
    ("after-fact-version-after-pin-question", [_PIN_Q, (C, "I'm on version {2.3} of the app.")]),
    ("after-fact-time-at-after-pin-question", [_PIN_Q, (C, "I'll call you back at {3:30}.")]),
    ("after-fact-time-pm-after-cvv-question", [_CVV_Q, (C, "Can you call me back {3:30} pm?")]),
    ("after-fact-time-after-order-number", [(A, "What's your order number?"), (C, "It's {3:30}.")]),
    ("after-fact-slash-date-plain-talk", [(C, "I'll be in on {4/12}.")]),
    ("after-fact-bill-decimal-after-phone-cue", [(C, "My phone bill went up to {49.99}.")]),
    ("after-fact-charge-decimal-after-card-cue", [(C, "My card was charged {12.99} twice.")]),
    ("after-fact-digits-rule-is-no-read-out", [(C, "The total is 128, and {2.5} of that is tax.")]),
]


@pytest.mark.parametrize("turns", [t for _, t in _REGRESSIONS], ids=[i for i, _ in _REGRESSIONS])
def test_found_while_fixing(turns):
    snippet = Snippet("regression", "regression", [parse(role, text) for role, text in turns])
    for turn, out, r in run_snippet(snippet, redactor_for(snippet)):
        assert not r.leaked and not r.overmasked, (turn.text, out, r.leaked, r.overmasked)
