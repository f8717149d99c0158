"""Which entities are redacted, and how: ASAPP's defaults and the Chime API's fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ENTITY_TYPES: tuple[str, ...] = (
    "CREDIT_CARD_NUMBER", "CVV", "CARD_EXPIRY", "SSN", "PIN", "PASSWORD", "EMAIL", "PHONE_NUMBER",
    "DOB", "DIGITS", "BANK_ACCOUNT_NUMBER", "BANK_ROUTING",
)

# ASAPP's numeric rules: 3-, 4-, 9- and 10-digit numerics, and credit-card-length runs.
ASAPP_DIGIT_RUN_LENGTHS = frozenset({3, 4, 9, 10})
ASAPP_LONG_RUN_MIN = 12

# Chime PiiEntityTypes -> callscribe entities. ADDRESS and NAME need named-entity recognition,
# which callscribe does not ship: they are accepted and detect nothing.
CHIME_ENTITY_MAP: dict[str, tuple[str, ...]] = {
    "CREDIT_DEBIT_NUMBER": ("CREDIT_CARD_NUMBER",),
    "CREDIT_DEBIT_CVV": ("CVV",),
    "CREDIT_DEBIT_EXPIRY": ("CARD_EXPIRY",),
    "SSN": ("SSN",),
    "PIN": ("PIN",),
    "EMAIL": ("EMAIL",),
    "PHONE": ("PHONE_NUMBER",),
    "BANK_ACCOUNT_NUMBER": ("BANK_ACCOUNT_NUMBER",),
    "BANK_ROUTING": ("BANK_ROUTING",),
    "ADDRESS": (),
    "NAME": (),
}
CHIME_LABELS: tuple[tuple[str, str], ...] = tuple(
    (ours[0], chime) for chime, ours in CHIME_ENTITY_MAP.items() if ours
)


@dataclass(frozen=True)
class RedactionPolicy:
    """What to redact. `style` "mask" keeps the length ('#' per letter or digit); "label" writes [ENTITY].

    `digit_run_lengths` and `long_run_min` define the DIGITS entity: a digit run (after spoken
    numbers and separators are normalised) is masked when its length is in the set or at least
    `long_run_min`. `labels` renames entities in label style (Chime's own names, or "PII").
    """

    entities: frozenset[str]
    style: Literal["mask", "label"] = "mask"
    digit_run_lengths: frozenset[int] = ASAPP_DIGIT_RUN_LENGTHS
    long_run_min: int = ASAPP_LONG_RUN_MIN
    labels: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "entities", frozenset(self.entities))
        object.__setattr__(self, "digit_run_lengths", frozenset(self.digit_run_lengths))
        unknown = set(self.entities) - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown redaction entities: {sorted(unknown)}")
        if self.style not in ("mask", "label"):
            raise ValueError(f"unknown redaction style: {self.style!r}")

    def label(self, entity: str) -> str:
        return "[" + dict(self.labels).get(entity, entity) + "]"

    @classmethod
    def asapp_default(cls) -> "RedactionPolicy":
        """ASAPP's default policy for voice (control-apis §A.6).

        Always on: cards (and the >=12-digit rule), CVV, SSN (and every 9-digit run), PIN, PASSWORD.
        Default on: 3-, 4- and 10-digit numerics (DIGITS), phone numbers, and card expiry (it is
        part of the card data a payment call reads). Off: EMAIL (digital channels only), DOB,
        bank account and routing numbers (not in ASAPP's list; the digit rules still cover most).
        """
        return cls(frozenset({
            "CREDIT_CARD_NUMBER", "CVV", "CARD_EXPIRY", "SSN", "PIN", "PASSWORD", "PHONE_NUMBER", "DIGITS",
        }))

    @classmethod
    def all_entities(cls, style: Literal["mask", "label"] = "mask") -> "RedactionPolicy":
        return cls(frozenset(ENTITY_TYPES), style)

    @classmethod
    def from_chime(cls, redaction_type: str | None, identification_type: str | None,
                   pii_entity_types: str | None) -> "RedactionPolicy | None":
        """Policy for Chime's EngineTranscribeSettings, or None when neither Content*Type is set.

        ContentRedactionType=PII replaces each entity with "[PII]"; ContentIdentificationType=PII
        labels it with its Chime type ("[CREDIT_DEBIT_NUMBER]"). Raises ValueError for what the
        Chime API rejects: both types set, a value other than PII, PiiEntityTypes without a type,
        an unknown entity type.
        """
        if redaction_type is None and identification_type is None:
            if pii_entity_types is not None:
                raise ValueError("PiiEntityTypes needs ContentRedactionType or ContentIdentificationType")
            return None
        if redaction_type is not None and identification_type is not None:
            raise ValueError("ContentRedactionType cannot be combined with ContentIdentificationType")
        kind = redaction_type if redaction_type is not None else identification_type
        if kind != "PII":
            raise ValueError(f"unsupported content type {kind!r}; only PII is supported")
        names = [n.strip() for n in (pii_entity_types or "ALL").split(",") if n.strip()]
        if not names:
            raise ValueError("PiiEntityTypes is empty")
        entities: set[str] = set()
        for name in names:
            if name == "ALL":
                for ours in CHIME_ENTITY_MAP.values():
                    entities.update(ours)
            elif name in CHIME_ENTITY_MAP:
                entities.update(CHIME_ENTITY_MAP[name])
            else:
                raise ValueError(f"unknown PiiEntityTypes value {name!r}")
        if redaction_type is not None:
            labels = tuple((e, "PII") for e in ENTITY_TYPES)
        else:
            labels = CHIME_LABELS
        return cls(frozenset(entities), "label", labels=labels)
