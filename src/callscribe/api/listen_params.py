"""The query string of Deepgram's `/v1/listen` (specs/control-apis.md §D.3), live and pre-recorded.

`parse_query` turns the (name, value) pairs into `ListenOptions` or raises `ListenRefused` with the
message Deepgram's 400 carries. Every parameter Deepgram documents is known; the ones callscribe
cannot honour are refused when asked for (phi redaction, search, replace, diarization, entity
detection, dictation) or accepted and listed in `ignored` when doing nothing is harmless
(profanity_filter, keywords/keyterm, numerals: the engine always writes numbers as digits).
A name Deepgram does not know is refused, as Deepgram does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from callscribe.redact import RedactionPolicy

ENCODINGS = ("linear16", "mulaw", "alaw")  # raw; no `encoding` means a container (WAV on the live socket)
MAX_CHANNELS = 8
MIN_ENDPOINT_MS, MAX_ENDPOINT_MS = 100, 5000  # what the engine's segmenter can do (CALLSCRIBE_ENDPOINT_SILENCE_MS)
LANGUAGES = ("en", "en-us")  # what the bundled English model serves; others are refused
MAX_VALUE_CHARS = 1024

# Deepgram's redaction groups and entity names -> callscribe's entities (redact/policy.py).
# Names and places need named-entity recognition, which callscribe does not ship: `pii` covers
# only the numeric and textual entities it can find.
_PCI = ("CREDIT_CARD_NUMBER", "CVV", "CARD_EXPIRY")
_NUMBERS = ("DIGITS", "CREDIT_CARD_NUMBER", "SSN", "PHONE_NUMBER", "BANK_ACCOUNT_NUMBER", "BANK_ROUTING", "PIN")
REDACT_GROUPS: dict[str, tuple[str, ...]] = {
    "pci": _PCI,
    "ssn": ("SSN",),
    "numbers": _NUMBERS, "true": _NUMBERS, "aggressive_numbers": _NUMBERS,
    "pii": ("SSN", "EMAIL", "PHONE_NUMBER", "DOB", "PIN", "PASSWORD", "BANK_ACCOUNT_NUMBER", "BANK_ROUTING",
            *_PCI),
    "credit_card": ("CREDIT_CARD_NUMBER",), "credit_card_expiration": ("CARD_EXPIRY",), "cvv": ("CVV",),
    "email_address": ("EMAIL",), "phone_number": ("PHONE_NUMBER",), "dob": ("DOB",),
    "account_number": ("BANK_ACCOUNT_NUMBER",), "routing_number": ("BANK_ROUTING",), "pin": ("PIN",),
    "password": ("PASSWORD",),
}

_BOOLS = ("interim_results", "vad_events", "punctuate", "smart_format", "numerals", "multichannel",
          "profanity_filter", "diarize", "dictation", "detect_entities", "mip_opt_out", "filler_words",
          "utterances", "paragraphs", "no_delay")
_REFUSED_TRUE = ("diarize", "dictation", "detect_entities")  # would change what a client relies on
_IGNORED_TRUE = ("profanity_filter", "filler_words", "no_delay", "paragraphs")
_REPEATABLE = ("redact", "tag", "keywords", "keyterm", "extra", "search", "replace")
_PLAIN = ("model", "language", "encoding", "sample_rate", "channels", "endpointing", "utterance_end_ms",
          "callback", "callback_method", "version", "tier", "diarize_model", "language_hint", "utt_split")
KNOWN = frozenset(_BOOLS + _REPEATABLE + _PLAIN)


class ListenRefused(Exception):
    """The request cannot be served; the message is Deepgram's err_msg."""


@dataclass(frozen=True)
class ListenOptions:
    model: str = "general"
    language: str = "en"
    encoding: str | None = None  # None: a container
    sample_rate: int | None = None
    channels: int = 1
    multichannel: bool = False
    interim_results: bool = False
    endpointing_ms: int | None = None  # None: the server's endpointing
    speech_final: bool = True  # endpointing=false: speech_final is never set
    utterance_end_ms: int | None = None
    vad_events: bool = False
    punctuate: bool = False
    smart_format: bool = False
    utterances: bool = False  # pre-recorded: the response lists the utterances too
    redact: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    keyterms: tuple[str, ...] = ()
    callback: str | None = None
    callback_method: str = "POST"
    ignored: tuple[str, ...] = ()  # parameters accepted and not applied (the Metadata says so)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def tracks(self) -> int:
        """How many participants the audio carries: one per channel with multichannel, else one."""
        return self.channels if self.multichannel else 1

    def redaction_policy(self) -> RedactionPolicy | None:
        if not self.redact:
            return None
        entities = {e for name in self.redact for e in REDACT_GROUPS[name]}
        if "DIGITS" in entities:  # Deepgram's numbers: any run of three or more numerals
            return RedactionPolicy(frozenset(entities), digit_run_lengths=frozenset(range(3, 12)), long_run_min=12)
        return RedactionPolicy(frozenset(entities))


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ListenRefused(f"Invalid query string: {name} must be true or false")


def _int(name: str, value: str, low: int, high: int) -> int:
    v = value.strip()
    if not v.isdigit() or len(v) > 9 or not low <= int(v) <= high:
        raise ListenRefused(f"Invalid query string: {name} must be a whole number from {low} to {high}")
    return int(v)


def parse_query(items: Iterable[tuple[str, str]], *, callback_hosts: Sequence[str] = ()) -> ListenOptions:
    """ListenOptions from the query string's pairs, or ListenRefused. `callback_hosts`: the hosts a
    `callback` may name (the configured webhook's); any other is refused."""
    one: dict[str, str] = {}
    many: dict[str, list[str]] = {}
    for name, value in items:
        if name not in KNOWN:
            raise ListenRefused(f"Invalid query string: unknown parameter {name[:64]!r}")
        if len(value) > MAX_VALUE_CHARS:
            raise ListenRefused(f"Invalid query string: {name} is too long")
        if name in _REPEATABLE:
            values = value.split(",") if name == "redact" else [value]
            many.setdefault(name, []).extend(v for v in values if v.strip())
        elif name in one and one[name] != value:
            raise ListenRefused(f"Invalid query string: {name} given twice")
        else:
            one[name] = value
    flags = {name: _bool(name, one[name]) for name in _BOOLS if name in one}
    for name in _REFUSED_TRUE:
        if flags.get(name):
            raise ListenRefused(f"{name} is not supported by this server")
    for name in ("search", "replace", "diarize_model"):
        if many.get(name) or one.get(name):
            raise ListenRefused(f"{name} is not supported by this server")
    ignored = [name for name in _IGNORED_TRUE if flags.get(name)]
    if flags.get("numerals") is False:
        ignored.append("numerals")  # the engine writes numbers as digits either way

    language = one.get("language", "en").strip()
    if language.lower().replace("_", "-") not in LANGUAGES:
        raise ListenRefused(f"No such model/language/tier combination found. Language {language[:32]!r} "
                            "is not served here (en, en-US)")
    encoding = one.get("encoding")
    if encoding is not None:
        encoding = encoding.strip().lower()
        if encoding not in ENCODINGS:
            raise ListenRefused(f"Invalid query string: encoding must be one of {', '.join(ENCODINGS)} "
                                "(or absent for a container)")
    sample_rate = _int("sample_rate", one["sample_rate"], 8000, 48000) if "sample_rate" in one else None
    if encoding is not None and sample_rate is None:
        raise ListenRefused("Invalid query string: sample_rate is required with encoding")
    channels = _int("channels", one.get("channels", "1"), 1, MAX_CHANNELS)

    endpointing_ms, speech_final = None, True
    if "endpointing" in one:
        raw = one["endpointing"].strip().lower()
        if raw == "false":
            speech_final = False
        elif raw != "true":  # true: the default endpointing
            ms = _int("endpointing", raw, 0, 60000)
            endpointing_ms = min(max(ms, MIN_ENDPOINT_MS), MAX_ENDPOINT_MS)
    utterance_end_ms = _int("utterance_end_ms", one["utterance_end_ms"], 1000, 5000) \
        if "utterance_end_ms" in one else None
    interim = flags.get("interim_results", False)
    if utterance_end_ms is not None and not interim:
        raise ListenRefused("Invalid query string: utterance_end_ms requires interim_results=true")

    redact = tuple(dict.fromkeys(v.strip().lower() for v in many.get("redact", ()) if v.strip().lower() != "false"))
    for name in redact:
        if name not in REDACT_GROUPS:
            raise ListenRefused(f"Invalid query string: redact={name[:40]} is not supported by this server")

    callback = one.get("callback")
    if callback is not None:
        from urllib.parse import urlsplit

        host = urlsplit(callback).hostname or ""
        if host.lower() not in {h.lower() for h in callback_hosts}:
            raise ListenRefused("callback must name the webhook host configured on this server")
    method = one.get("callback_method", "POST").upper()
    if method not in ("POST", "PUT"):
        raise ListenRefused("Invalid query string: callback_method must be POST or PUT")
    keyterms = tuple(many.get("keyterm", ())) + tuple(many.get("keywords", ()))
    if keyterms:
        ignored.append("keyterm" if "keyterm" in many else "keywords")
    extra = {}
    for item in many.get("extra", ()):
        key, sep, value = item.partition(":")
        if not sep:
            raise ListenRefused("Invalid query string: extra must be key:value")
        extra[key] = value
    return ListenOptions(
        model=one.get("model", "general").strip() or "general", language=language, encoding=encoding,
        sample_rate=sample_rate, channels=channels, multichannel=flags.get("multichannel", False),
        interim_results=interim, endpointing_ms=endpointing_ms, speech_final=speech_final,
        utterance_end_ms=utterance_end_ms, vad_events=flags.get("vad_events", False),
        punctuate=flags.get("punctuate", False), smart_format=flags.get("smart_format", False),
        utterances=flags.get("utterances", False), redact=redact,
        tags=tuple(many.get("tag", ())), keyterms=keyterms, callback=callback, callback_method=method,
        ignored=tuple(ignored), extra=extra)
