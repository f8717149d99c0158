"""The AudioHook protocol's messages (version 2; media-protocols spec §2.2-2.4), in and out.

In: `parse_message` turns one text frame into a `ClientMessage` (envelope checked: version, id,
type, seq, serverseq, position, parameters) or raises `AdapterError`; `parse_open` reads the open
transaction's parameters; `select_media` picks one offered media entry. Out: the server envelope
and the `transcript` event entity of the Transcription Connector. Durations are ISO 8601
(`PT1.25S`), kept here in milliseconds.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from callscribe.calls.events import UtteranceEvent
from callscribe.ingest.base import AdapterError, Close, boolean, json_object, obj, string

VERSION = "2"
MAX_TEXT_BYTES = 64 * 1024  # the reference server refuses larger text frames
NULL_UUID = "00000000-0000-0000-0000-000000000000"
CHANNELS = ("external", "internal")
FORMATS = {"PCMU": 1, "L16": 2}  # bytes per sample
RATES = {"PCMU": (8000,), "L16": (8000, 16000)}
CLIENT_TYPES = ("open", "ping", "update", "paused", "resumed", "discarded", "error", "close")
CLOSE_REASONS = ("end", "error", "disconnect", "reconnect")
MAX_SEQ = 2**53
#: The language-REGION tags offered in `supportedLanguages` for each language the engine knows
#: (Genesys names languages with a region; the registry accepts any region of a known language).
REGIONS = {"en": ("US", "GB", "AU", "CA", "IN"), "es": ("ES", "US", "MX"), "fr": ("FR", "CA"), "de": ("DE",),
           "it": ("IT",), "pt": ("BR", "PT"), "nl": ("NL",), "ja": ("JP",), "ko": ("KR",), "zh": ("CN", "TW"),
           "ru": ("RU",), "pl": ("PL",), "sv": ("SE",), "da": ("DK",), "fi": ("FI",), "tr": ("TR",),
           "ar": ("SA", "AE"), "hi": ("IN",)}

_DURATION = re.compile(r"^PT(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,12})(?:\.(\d{1,9}))?S)?$")


def parse_duration(value: Any, what: str) -> int:
    """An ISO 8601 duration (`PT3.2S`, `PT1M2S`) in whole milliseconds."""
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None or value == "PT":
        raise AdapterError(f"'{what}' is not an ISO 8601 duration")
    hours, minutes, seconds, fraction = m.groups()
    ms = (int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)) * 1000
    return ms + int(((fraction or "") + "000")[:3])


def format_duration(ms: int) -> str:
    seconds, rest = divmod(max(0, int(ms)), 1000)
    return f"PT{seconds}.{rest:03d}".rstrip("0").rstrip(".") + "S"


# In ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientMessage:
    type: str
    id: str
    seq: int
    serverseq: int
    position_ms: int
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Media:
    """One media entry: an offer of the client, or the one we chose (echoed exactly)."""

    format: str
    rate: int
    channels: tuple[str, ...]
    raw: dict[str, Any]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel (a frame must be a whole number of these)."""
        return FORMATS[self.format] * len(self.channels)


@dataclass(frozen=True)
class Open:
    organization_id: str
    conversation_id: str
    participant: dict[str, Any]
    media: list[Media]  # the usable offers, in the client's order
    offered: int  # how many entries were offered
    language: str | None
    supported_languages: bool
    custom_config: dict[str, Any] = field(default_factory=dict)

    @property
    def probe(self) -> bool:
        """A connection probe: Genesys checks the endpoint with a null conversation id and closes."""
        return self.conversation_id == NULL_UUID


def _count(msg: dict[str, Any], key: str) -> int:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SEQ:
        raise AdapterError(f"'{key}' must be a non-negative integer")
    return value


def parse_message(data: str | bytes) -> ClientMessage:
    """One text frame -> a client message, or AdapterError (the session then ends with `disconnect`)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise AdapterError("audio is sent in binary frames, messages in text frames")
    if len(data) > MAX_TEXT_BYTES:
        raise AdapterError(f"text message larger than {MAX_TEXT_BYTES} bytes", Close.TOO_BIG)
    msg = json_object(data)
    if msg.get("version") != VERSION:
        raise AdapterError(f"'version' must be \"{VERSION}\"")
    kind = string(msg, "type", required=True, max_len=32) or ""
    session_id = string(msg, "id", required=True, max_len=64) or ""
    seq, serverseq = _count(msg, "seq"), _count(msg, "serverseq")
    position = parse_duration(msg.get("position"), "position")
    parameters = obj(msg, "parameters")
    if kind not in CLIENT_TYPES:
        raise AdapterError(f"'{kind[:32]}' is not a client message type")
    return ClientMessage(kind, session_id, seq, serverseq, position, parameters)


def _media(entry: Any, n: int) -> Media | None:
    """One offered entry, or None when we cannot take it (another format, rate or channel name)."""
    if not isinstance(entry, dict):
        raise AdapterError(f"'parameters.media[{n}]' must be an object")
    fmt, rate, channels = entry.get("format"), entry.get("rate"), entry.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise AdapterError(f"'parameters.media[{n}].channels' must be a list of strings")
    if (entry.get("type") != "audio" or fmt not in FORMATS or isinstance(rate, bool) or rate not in RATES[fmt]
            or not channels or len(set(channels)) != len(channels) or not set(channels) <= set(CHANNELS)):
        return None
    return Media(fmt, rate, tuple(channels), entry)


def parse_open(params: dict[str, Any]) -> Open:
    where = "parameters."
    organization = string(params, "organizationId", required=True, where=where, max_len=64) or ""
    conversation = string(params, "conversationId", required=True, where=where, max_len=256) or ""
    participant = obj(params, "participant", required=False, where=where)
    offers = params.get("media")
    if not isinstance(offers, list):
        raise AdapterError("'parameters.media' must be a list")
    if len(offers) > 32:
        raise AdapterError("'parameters.media' offers too many entries")
    media = [m for n, entry in enumerate(offers) if (m := _media(entry, n)) is not None]
    language = string(params, "language", where=where, max_len=64)
    return Open(organization, conversation, participant, media, len(offers), language or None,
                boolean(params, "supportedLanguages", False, where=where),
                obj(params, "customConfig", required=False, where=where))


def language_tags(languages: list[str]) -> list[str]:
    """`supportedLanguages`: language-REGION tags of the engine's languages."""
    return [f"{lang}-{region}" for lang in sorted(languages) for region in REGIONS.get(lang, ())]


def select_media(offers: list[Media]) -> Media | None:
    """The entry to take: most channels first, PCMU over L16, then the client's order of preference."""
    if not offers:
        return None
    return min(enumerate(offers), key=lambda p: (-len(p[1].channels), p[1].format != "PCMU", p[0]))[1]


def gap_parameters(params: dict[str, Any], kind: str) -> tuple[int, int]:
    """(start, discarded) in ms of a `resumed` or `discarded` message (zero when absent)."""
    start = parse_duration(params["start"], f"parameters.start of {kind}") if "start" in params else 0
    dropped = parse_duration(params["discarded"], f"parameters.discarded of {kind}") if "discarded" in params else 0
    return start, dropped


# Out -----------------------------------------------------------------------------------------------


def server_message(session_id: str, kind: str, seq: int, clientseq: int,
                   parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"version": VERSION, "id": session_id, "type": kind, "seq": seq, "clientseq": clientseq,
            "parameters": parameters or {}}


def transcript_entity(ev: UtteranceEvent, channel_id: int, language: str | None) -> dict[str, Any]:
    """A `transcript` event entity. Partials and the final of one utterance share an id, so the
    client replaces what it showed. Offsets count from the start of the session's audio.

    Confidence comes from the words when the stream has them; without words the engine gives none
    for the utterance, and 1.0 says "not measured" rather than inventing a figure."""
    words = ev.words or ()
    alternative: dict[str, Any] = {
        "confidence": round(sum(w.confidence for w in words) / len(words), 3) if words else 1.0,
        "interpretations": [{"type": "display", "transcript": ev.text}],
    }
    if language:
        alternative["languages"] = [language]
    if words:
        alternative["interpretations"][0]["tokens"] = [
            {"type": "word", "value": w.text.strip(), "confidence": round(w.confidence, 3),
             "offset": format_duration(w.start_ms), "duration": format_duration(w.end_ms - w.start_ms)}
            for w in words]
    return {"type": "transcript", "data": {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"callscribe:{ev.stream_id}:{ev.utterance}")),
        "channelId": channel_id, "isFinal": ev.kind == "final",
        "offset": format_duration(ev.start_ms), "duration": format_duration(ev.end_ms - ev.start_ms),
        "alternatives": [alternative]}}
