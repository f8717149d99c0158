"""Context words: what makes '3 7 1' a CVV and '12345' an order number.

A cue is a short phrase found in an utterance. Sensitive cues name an entity; SAFE cues ("order
number", "zip code") say that the number near them is not sensitive, which only lifts the guesses
(a card prefix left at the end of a turn), never ASAPP's digit rules. READOUT cues ("last four",
"ending in") name no entity but say that a number read out follows: it is not a year or a count,
and the number words inside the cue ("four") are not digits of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .normalize import Token

SAFE = "SAFE"
READOUT = "READOUT"

_PHRASES: dict[str, tuple[str, ...]] = {
    "CREDIT_CARD_NUMBER": (
        "card", "card number", "credit card", "debit card", "visa", "mastercard", "master card",
        "amex", "american express", "long number", "number on the front", "card ending",
        "number on the card", "card no", "card ending in", "card ends in",
    ),
    "CVV": (
        "security code", "cvv", "cvc", "cv2", "cvv2", "c v v", "c v c", "code", "security number",
        "three digits", "three digit", "3 digits", "3 digit", "three digit code",
        "digits on the back", "number on the back", "code on the back", "four digits on the front",
    ),
    "CARD_EXPIRY": (
        "expiry", "expiration", "expires", "expire", "expiring", "exp", "exp date", "valid thru",
        "valid through", "good thru", "good through", "expiry date", "expiration date",
    ),
    "SSN": (
        "social security", "social", "ssn", "s s n", "socials", "social security number",
        "last four of your social", "tax id",
    ),
    "PIN": (
        "pin", "pin number", "pin code", "passcode", "pass code", "verification code",
        "one time code", "one time passcode", "otp", "access code", "security pin",
    ),
    "PASSWORD": ("password", "pass word", "passphrase", "pass phrase"),
    "PHONE_NUMBER": (
        "phone", "phone number", "cell", "cell number", "mobile", "mobile number", "call me at",
        "reach me at", "callback number", "call back number", "telephone", "call me on",
        "text me at", "contact number", "best number", "area code",
    ),
    "DOB": (
        "date of birth", "birth date", "birthdate", "birthday", "born", "born on", "born in",
        "dob", "d o b",
    ),
    "EMAIL": ("email", "e mail", "email address"),
    "BANK_ACCOUNT_NUMBER": (
        "account number", "bank account", "checking account", "savings account", "acct",
    ),
    "BANK_ROUTING": ("routing", "routing number", "aba", "sort code"),
    READOUT: (
        "last four", "last 4", "last four digits", "last 4 digits", "last three", "last 3",
        "last three digits", "last 3 digits", "last two", "last two digits", "first four",
        "first 4", "first four digits", "first six", "first 6", "ending in", "ends in", "ending with",
        "ends with", "that ends in", "the one ending",
    ),
    SAFE: (
        "order", "order number", "confirmation", "confirmation number", "reference",
        "reference number", "tracking", "tracking number", "ticket", "ticket number", "case",
        "case number", "invoice", "model", "model number", "zip", "zip code", "postal code",
        "promo code", "coupon code", "discount code", "extension", "room", "flight", "apartment",
        "suite", "unit", "store number", "item number", "sku", "serial number", "version",
        "gift card code",
    ),
}

# Cue words that are themselves number words must not become digits ("three digits on the back").
_MAX_LEN = max(len(p.split()) for ps in _PHRASES.values() for p in ps)
_INDEX: dict[tuple[str, ...], str] = {}
for _entity, _phrases in _PHRASES.items():
    for _p in _phrases:
        _INDEX.setdefault(tuple(_p.split()), _entity)


def _base(low: str) -> str:
    return low[:-2] if low.endswith("'s") else low  # "password's" -> "password"


@dataclass(frozen=True)
class Cue:
    entity: str
    first: int  # token indices (inclusive)
    last: int
    start: int  # character offsets
    end: int


def find_cues(tokens: list[Token]) -> list[Cue]:
    """Longest-match cue phrases over the words of the utterance (punctuation ignored)."""
    words = [i for i, t in enumerate(tokens) if t.kind != "punct"]
    cues: list[Cue] = []
    k = 0
    while k < len(words):
        found = None
        for length in range(min(_MAX_LEN, len(words) - k), 0, -1):
            key = tuple(_base(tokens[words[k + j]].low) for j in range(length))
            entity = _INDEX.get(key)
            if entity is not None:
                found = (entity, length)
                break
        if found is None:
            k += 1
            continue
        entity, length = found
        first, last = words[k], words[k + length - 1]
        cues.append(Cue(entity, first, last, tokens[first].start, tokens[last].end))
        k += length
    return cues


def cue_tokens(cues: list[Cue]) -> set[int]:
    """Token indices inside cue phrases that contain number words ('three digits', 'one time code')."""
    out: set[int] = set()
    for c in cues:
        if c.last > c.first:
            out.update(range(c.first, c.last + 1))
    return out
