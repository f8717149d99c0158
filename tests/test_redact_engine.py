"""Redaction engine behaviour beyond the corpus: word tokens, context, partials, labels, policies."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callscribe.asr.types import Word
from callscribe.redact import ENTITY_TYPES, CallRedactor, RedactionPolicy, RedactionResult
from callscribe.redact.detectors import Utterance, luhn_ok
from callscribe.redact.normalize import find_atoms, tokenize

DEFAULT = RedactionPolicy.asapp_default()
NO_DIGITS = replace(DEFAULT, entities=DEFAULT.entities - {"DIGITS"})


def words_of(text: str, step_ms: int = 300) -> list[Word]:
    """Whisper-style word tokens (leading space, punctuation attached) with made-up timings."""
    return [Word((" " if i else "") + w, i * step_ms, i * step_ms + 250, 0.9) for i, w in enumerate(text.split())]


# ---- word tokens ------------------------------------------------------------------------------

def test_words_masked_with_timings_kept() -> None:
    text = "My card is 4111 1111 1111 1111, thanks."
    words = words_of(text)
    res = CallRedactor(DEFAULT).redact_final(text, words)
    assert res.text == "My card is #### #### #### ####, thanks."
    assert [w.text for w in res.words] == ["My", " card", " is", " ####", " ####", " ####", " ####,", " thanks."]
    assert [(w.start_ms, w.end_ms, w.confidence) for w in res.words] == [
        (w.start_ms, w.end_ms, w.confidence) for w in words]


def test_words_masked_are_exactly_the_words_in_spans() -> None:
    text = "The code is three seven one and my zip is 97477."
    words = words_of(text)
    res = CallRedactor(NO_DIGITS).redact_final(text, words)
    (span,) = res.spans
    assert (span.entity, text[span.start:span.end]) == ("CVV", "three seven one")
    changed = [i for i, (a, b) in enumerate(zip(words, res.words)) if a.text != b.text]
    assert [words[i].text.strip() for i in changed] == ["three", "seven", "one"]
    assert [res.words[i].text for i in changed] == [" #####", " #####", " ###"]


def test_words_that_do_not_match_the_text_are_masked_when_numeric() -> None:
    text = "My card is 4111 1111 1111 1111."
    words = [Word(" My", 0, 100, 1.0), Word(" card", 100, 200, 1.0), Word(" is", 200, 300, 1.0),
             Word(" 4111-1111", 300, 900, 0.5), Word(" 1111-1111.", 900, 1500, 0.5)]
    res = CallRedactor(DEFAULT).redact_final(text, words)
    assert [w.text for w in res.words] == [" My", " card", " is", " ####-####", " ####-####."]


def test_unchanged_result() -> None:
    text = "Thanks, that's all I needed."
    words = words_of(text)
    res = CallRedactor(DEFAULT).redact_final(text, words)
    assert isinstance(res, RedactionResult)
    assert not res.changed and res.text == text and list(res.words) == words and res.spans == ()


def test_spans_are_offsets_in_the_original_text() -> None:
    text = "It's 41, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 and the CVV is 3 7 1."
    res = CallRedactor(DEFAULT).redact_final(text)
    assert [(s.entity, text[s.start:s.end]) for s in res.spans] == [
        ("CREDIT_CARD_NUMBER", "41, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1"), ("CVV", "3 7 1")]
    assert len(res.text) == len(text)


# ---- context across turns ---------------------------------------------------------------------

def test_card_read_over_two_turns_with_agent_backchannel() -> None:
    r = CallRedactor(NO_DIGITS)
    first = r.redact_final("Sure, it's four one one one one one one one", role="customer")
    r.redact_final("Mm-hm.", role="agent")
    second = r.redact_final("one one one one one one one one", role="customer")
    assert first.spans[0].entity == second.spans[0].entity == "CREDIT_CARD_NUMBER"
    assert "one" not in first.text.replace("Sure, it's", "") and "one" not in second.text


def test_agent_question_makes_the_next_answer_a_cvv() -> None:
    r = CallRedactor(NO_DIGITS)
    r.redact_final("What's the security code on the back?", role="agent")
    res = r.redact_final("3 7 1", role="customer")
    assert res.text == "# # #" and res.spans[0].entity == "CVV"
    # the topic fades: two content turns later, a 3-digit number is ordinary again
    r.redact_final("And I wanted to ask about my last bill too.", role="customer")
    assert r.redact_final("It was 128 in total.", role="customer").text == "It was 128 in total."


def test_context_is_per_call() -> None:
    a, b = CallRedactor(NO_DIGITS), CallRedactor(NO_DIGITS)
    a.redact_final("What's the security code?", role="agent")
    assert b.redact_final("3 7 1", role="customer").text == "3 7 1"
    assert a.redact_final("3 7 1", role="customer").text == "# # #"


# ---- partials ---------------------------------------------------------------------------------

def test_partial_masks_a_growing_digit_run() -> None:
    r = CallRedactor(NO_DIGITS)
    assert r.mask_partial("my card is 4111 11") == "my card is #### ##"
    assert r.mask_partial("it's four one one") == "it's #### ### ###"
    assert r.mask_partial("my order number is 12") == "my order number is ##"  # unsure: hidden
    assert r.redact_final("my order number is 12345").text == "my order number is 12345"  # final decides
    assert r.mask_partial("it was $49") == "it was $49"
    assert r.mask_partial("I'll call you at 5 tomorrow") == "I'll call you at 5 tomorrow"


def test_partial_uses_context_but_never_changes_it() -> None:
    r = CallRedactor(NO_DIGITS)
    assert r.mask_partial("what's the security code?", role="agent") == "what's the security code?"
    assert r.redact_final("3 7 1 is what I said", role="customer").text == "3 7 1 is what I said"
    r.redact_final("What's the security code?", role="agent")
    assert r.mask_partial("3 7 1 is", role="customer") == "# # # is"
    r2 = CallRedactor(NO_DIGITS)
    r2.mask_partial("4111 1111", role="customer")  # a partial does not leave a half card open
    assert r2.redact_final("Ticket 1 2 3 4 5 6 7 8", role="customer").text == "Ticket 1 2 3 4 5 6 7 8"


def test_partial_masks_a_dotted_read_out() -> None:
    """Regression, written after the fact: "4.9" (the recogniser's "four nine") was kept as a decimal."""
    assert CallRedactor(DEFAULT).mask_partial("Sure, my card number is 4.9.") == "Sure, my card number is #.#."
    assert CallRedactor(NO_DIGITS).mask_partial("my card number is 4.9") == "my card number is #.#"
    r = CallRedactor(DEFAULT)
    r.redact_final("Can I have your card number please.", role="agent")
    assert r.mask_partial("4.9", role="customer") == "#.#"
    assert r.mask_partial("3:7", role="customer") == "3:7"  # one digit each: nothing to hide yet
    fresh = CallRedactor(DEFAULT)
    assert fresh.mask_partial("the rate is 2.5") == "the rate is 2.5"
    assert fresh.mask_partial("it's 3:30") == "it's 3:30"
    assert fresh.mask_partial("at 3:30") == "at 3:30"


def test_dotted_and_clock_read_outs_after_a_question() -> None:
    """Regression, written after the fact: context decides whether '3.71' or '3:71' is a read-out."""
    for question, answer, masked, entity in [
        ("What is the security code on the back?", "It's 3.71.", "It's #.##.", "CVV"),
        ("What is the security code on the back?", "It's 3:71.", "It's #:##.", "CVV"),
        ("What is your PIN?", "It is 43.21", "It is ##.##", "PIN"),
        ("What is your PIN?", "12:34", "##:##", "PIN"),
        ("And the expiry date on the card?", "It expires 04.27.", "It expires ##.##.", "CARD_EXPIRY"),
    ]:
        for policy in (DEFAULT, NO_DIGITS):
            r = CallRedactor(policy)
            r.redact_final(question, role="agent")
            res = r.redact_final(answer, role="customer")
            assert (res.text, [s.entity for s in res.spans]) == (masked, [entity]), (question, answer)


def test_dotted_rest_of_a_card_after_an_agent_turn() -> None:
    """Regression, written after the fact: the rest of a card after 'and', dotted, without the DIGITS rule."""
    r = CallRedactor(NO_DIGITS)
    r.redact_final("Card number?", role="agent")
    assert r.redact_final("4916 3852", role="customer").text == "#### ####"
    r.redact_final("Okay, go on.", role="agent")
    assert r.redact_final("7140 and 28.69", role="customer").text == "#### and ##.##"


def test_slash_date_after_a_date_of_birth_question_stays_a_date() -> None:
    """Near miss for the slash-form fix: with DOB off, a date of birth is not a PIN or a CVV,
    even with a CVV question two turns back."""
    r = CallRedactor(DEFAULT)
    r.redact_final("What's the security code?", role="agent")
    assert r.redact_final("371", role="customer").text == "###"
    r.redact_final("And your date of birth?", role="agent")
    assert r.redact_final("3/12/85", role="customer").text == "3/12/85"


def test_time_after_a_finished_read_out_stays() -> None:
    """Near miss: the customer's open number is closed by the agent's own sentence."""
    r = CallRedactor(DEFAULT)
    r.redact_final("Can you verify the last four of your social?", role="agent")
    assert r.redact_final("1120.", role="customer").text == "####."
    r.redact_final("Thank you. I can book you for Tuesday the 14th at 9:30.", role="agent")
    assert r.redact_final("Yeah, 9:30 is fine.", role="customer").text == "Yeah, 9:30 is fine."


def test_partial_of_a_password() -> None:
    r = CallRedactor(DEFAULT)
    assert r.mask_partial("my password is sun") == "my password is ###"


# ---- label style ------------------------------------------------------------------------------

def test_label_style_text_and_words() -> None:
    policy = replace(DEFAULT, style="label")
    text = "My card number is 4111 1111 1111 1111 and the CVV is 371."
    res = CallRedactor(policy).redact_final(text, words_of(text))
    assert res.text == "My card number is [CREDIT_CARD_NUMBER] and the CVV is [CVV]."
    assert [w.text for w in res.words] == [
        "My", " card", " number", " is", " [CREDIT_CARD_NUMBER]", " ", " ", " ", " and", " the", " CVV",
        " is", " [CVV]."]
    assert [w.start_ms for w in res.words] == [w.start_ms for w in words_of(text)]
    assert CallRedactor(policy).mask_partial("it's 4111 1111 1111 1111") == "it's [CREDIT_CARD_NUMBER]"


# ---- policy -------------------------------------------------------------------------------------

# (sample, other entities that would also catch it and are switched off with it)
ENTITY_SAMPLES = {
    "CREDIT_CARD_NUMBER": ("Card 4111 1111 1111 1111 please.", set()),
    "CVV": ("The CVV is 371.", set()),
    "CARD_EXPIRY": ("It expires April 2027.", set()),
    "SSN": ("My social is 123-45-6789, thanks.", set()),
    "PIN": ("My PIN is 4 4 2 1.", set()),
    "PASSWORD": ("My password is hunter2.", set()),
    "EMAIL": ("It's john dot smith at gmail dot com.", set()),
    "PHONE_NUMBER": ("Call me at 555-867-5309 tomorrow.", set()),
    "DOB": ("My date of birth is March 3rd, 1985.", set()),
    "DIGITS": ("It's 5 5 1.", set()),
    "BANK_ACCOUNT_NUMBER": ("My account number is 12345678, thanks.", set()),
    "BANK_ROUTING": ("The routing number is 021000021, thanks.", {"SSN"}),  # 9 digits: ASAPP's SSN rule
}


@pytest.mark.parametrize("entity", ENTITY_TYPES)
def test_each_entity_can_be_switched_on_and_off(entity: str) -> None:
    text, also = ENTITY_SAMPLES[entity]
    on = CallRedactor(RedactionPolicy(frozenset({entity}))).redact_final(text)
    assert on.changed and {s.entity for s in on.spans} == {entity}, on
    everything_else = RedactionPolicy(frozenset(ENTITY_TYPES) - {entity, "DIGITS"} - also)
    assert CallRedactor(everything_else).redact_final(text).text == text


def test_asapp_default() -> None:
    p = RedactionPolicy.asapp_default()
    assert p.entities == {"CREDIT_CARD_NUMBER", "CVV", "CARD_EXPIRY", "SSN", "PIN", "PASSWORD",
                          "PHONE_NUMBER", "DIGITS"}
    assert p.style == "mask" and p.digit_run_lengths == {3, 4, 9, 10} and p.long_run_min == 12


def test_digit_rule_lengths_are_configurable() -> None:
    five = RedactionPolicy(frozenset({"DIGITS"}), digit_run_lengths=frozenset({5}))
    r = CallRedactor(five)
    assert r.redact_final("Order 12345 and room 412.").text == "Order ##### and room 412."


def test_unknown_entity_rejected() -> None:
    with pytest.raises(ValueError):
        RedactionPolicy(frozenset({"CREDIT_CARD"}))


def test_from_chime() -> None:
    assert RedactionPolicy.from_chime(None, None, None) is None
    red = RedactionPolicy.from_chime("PII", None, "CREDIT_DEBIT_NUMBER, SSN")
    assert red is not None and red.entities == {"CREDIT_CARD_NUMBER", "SSN"} and red.style == "label"
    assert CallRedactor(red).redact_final("It's 4111 1111 1111 1111.").text == "It's [PII]."
    ident = RedactionPolicy.from_chime(None, "PII", None)
    assert ident is not None and {"CREDIT_CARD_NUMBER", "CVV", "CARD_EXPIRY", "PIN", "EMAIL", "PHONE_NUMBER",
                                  "BANK_ACCOUNT_NUMBER", "BANK_ROUTING", "SSN"} == ident.entities
    assert CallRedactor(ident).redact_final("Call me at 555-867-5309.").text == "Call me at [PHONE]."
    assert RedactionPolicy.from_chime("PII", None, "ALL") == RedactionPolicy.from_chime("PII", None, None)
    assert RedactionPolicy.from_chime("PII", None, "ADDRESS,NAME").entities == frozenset()
    for bad in [("PII", "PII", None), ("PHI", None, None), (None, None, "SSN"), ("PII", None, "SSN,PASSPORT")]:
        with pytest.raises(ValueError):
            RedactionPolicy.from_chime(*bad)


# ---- normaliser: text2num as an oracle for plain spoken numbers --------------------------------

@pytest.mark.parametrize("phrase", [
    "four one one one", "forty one eleven", "nineteen eighty five", "twenty twenty four",
    "one hundred twenty three", "two thousand twenty seven", "five thirty", "seven forty two",
    "twelve ninety nine", "sixty four", "three hundred and five", "nine nine seven",
])
def test_spoken_numbers_agree_with_text2num(phrase: str) -> None:
    text_to_num = pytest.importorskip("text_to_num")
    expected = text_to_num.alpha2digit(phrase, "en").replace(" ", "")
    toks = tokenize(phrase)
    assert "".join(a.digits for a in find_atoms(toks)) == expected


@pytest.mark.parametrize("phrase,digits", [
    ("double four", "44"), ("triple one two", "1112"), ("oh four twenty seven", "0427"),
    ("five five five, eight six seven, five three oh nine", "5558675309"), ("a hundred", "100"),
])
def test_speech_forms(phrase: str, digits: str) -> None:
    u = Utterance.analyse(phrase)
    assert "".join(r.digits for r in u.runs) == digits


# ---- adversarial: no card number survives, however it is written or split ----------------------

_SPOKEN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    body = draw(st.lists(st.integers(0, 9), min_size=length - 1, max_size=length - 1))
    body[0] = draw(st.sampled_from([3, 4, 5, 6]))
    for check in range(10):
        number = "".join(map(str, body)) + str(check)
        if luhn_ok(number):
            return number
    raise AssertionError("unreachable")


def _fmt(number: str, style: str) -> list[str]:
    """The number as a list of tokens in one of the ways recognisers write it."""
    groups = [number[i:i + 4] for i in range(0, len(number), 4)]
    if style == "spaces":
        return groups
    if style == "dashes":
        return ["-".join(groups)]
    if style == "whisper_commas":
        return [number[:2] + ","] + [d + "," for d in number[2:-1]] + [number[-1]]
    if style == "dots":
        return [".".join(groups)]
    if style == "plain":
        return [number]
    if style == "digit_spaces":
        return list(number)
    spoken = [("oh" if d == "0" and 0 < i < len(number) - 1 else _SPOKEN[int(d)]) for i, d in enumerate(number)]
    if style == "spoken_groups":
        return [w + ("," if i % 4 == 3 else "") for i, w in enumerate(spoken)]
    return spoken


def _visible_digits(text: str) -> int:
    return sum(len(r.digits) for r in Utterance.analyse(text).runs)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=card_numbers(),
       style=st.sampled_from(["spaces", "dashes", "whisper_commas", "dots", "plain", "digit_spaces",
                              "spoken", "spoken_groups"]),
       lead=st.sampled_from(["", "My card number is ", "Yes, it is ", "Uh, ", "ok so "]),
       policy=st.sampled_from([DEFAULT, NO_DIGITS]))
def test_no_card_number_survives_one_utterance(number: str, style: str, lead: str, policy: RedactionPolicy) -> None:
    text = lead + " ".join(_fmt(number, style)) + "."
    out = CallRedactor(policy).redact_final(text).text
    assert _visible_digits(out) == 0, (text, out)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(number=card_numbers(),
       style=st.sampled_from(["spaces", "whisper_commas", "digit_spaces", "spoken", "spoken_groups", "plain"]),
       cut=st.floats(0.05, 0.95),
       backchannel=st.booleans(),
       policy=st.sampled_from([DEFAULT, NO_DIGITS]))
def test_no_card_number_survives_two_utterances(number: str, style: str, cut: float, backchannel: bool,
                                                policy: RedactionPolicy) -> None:
    """Split anywhere over two turns of the same speaker: at most the first five digits can show
    (a short first part with no card context; PCI allows the first six), never the number."""
    tokens = _fmt(number, style) if style != "plain" else [number[:max(1, int(len(number) * cut))],
                                                           number[max(1, int(len(number) * cut)):]]
    k = min(len(tokens) - 1, max(1, int(len(tokens) * cut)))
    r = CallRedactor(policy)
    first = r.redact_final(" ".join(tokens[:k]), role="customer").text
    if backchannel:
        r.redact_final("Okay.", role="agent")
    second = r.redact_final(" ".join(tokens[k:]), role="customer").text
    assert _visible_digits(second) == 0, (tokens[k:], second)
    assert _visible_digits(first) <= 5, (tokens[:k], first)
    assert number not in re.sub(r"\D", "", first + second)


_VOCAB = ["four", "oh", "one", "double", "twenty", "hundred", "and", "card", "security", "code", "is", "my",
          "password", "at", "dot", "com", "born", "March", "$", "4111", "12", "3", ",", ".", "-", "/", "?",
          ":", "th", "uh", "expiry", "social", "pin", "order", "number", "pm", "dollars", "'s", "a", "o"]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(_VOCAB), max_size=25), min_size=1, max_size=4),
       st.sampled_from(["mask", "label"]))
def test_any_text_is_handled(utterances: list[list[str]], style: str) -> None:
    r = CallRedactor(RedactionPolicy.all_entities(style))  # type: ignore[arg-type]
    for toks in utterances:
        text = " ".join(toks)
        words = words_of(text)
        res = r.redact_final(text, words, role="customer")
        assert len(res.words) == len(words)
        assert [w.start_ms for w in res.words] == [w.start_ms for w in words]
        if style == "mask":
            assert len(res.text) == len(text)
            assert all(a == b or b == "#" for a, b in zip(text, res.text))
        r.mask_partial(text, role="agent")


def test_long_decoder_loop_is_masked_quickly() -> None:
    text = "Yes, it is 41, " + "1, " * 400 + "1."
    res = CallRedactor(DEFAULT).redact_final(text, words_of(text))
    assert not any(ch.isdigit() for ch in res.text)
    assert CallRedactor(DEFAULT).redact_final("").text == ""
