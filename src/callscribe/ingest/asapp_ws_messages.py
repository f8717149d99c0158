"""The messages of the ASAPP direct WebSocket (specs/control-apis.md §A.4), in and out.

In: `startStream` -> (role, externalId, StreamParams) or the status code that refuses it;
`updateVocabulary` -> the vocabularyResponse status. Out: startResponse, transcript (with
detailedToken tokens), vocabularyResponse and finalResponse bodies. Status codes are strings here,
as in ASAPP's startResponse.
"""

from __future__ import annotations

from typing import Any, Iterable

from callscribe.asr.types import Word
from callscribe.audio.rates import TELEPHONY_RATE
from callscribe.calls.events import StreamSummary, UtteranceEvent
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MAX_EXTERNAL_ID, valid_id
from callscribe.calls.redaction import REDACTION_OUTPUTS
from callscribe.ingest.base import AdapterError, Close

SAMPLE_RATE = TELEPHONY_RATE
ROLES = ("customer", "agent")
VOCABULARY_CATEGORIES = (None, "address", "name", "number", "company", "currency")
MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 256
_PUNCT = ".,?!;:\"'"


def refused(code: int, description: str) -> AdapterError:
    """A refusal: the finalResponse carries `code`; the socket then closes normally."""
    return AdapterError(description, Close.NORMAL, status=code)


def status(code: int, description: str) -> dict[str, str]:
    return {"code": str(code), "description": description}


def parse_start(msg: dict[str, Any]) -> tuple[str, str, StreamParams]:
    """(role, externalId, params) of a startStream, or a refusal with ASAPP's code."""
    sender = msg.get("sender")
    if not isinstance(sender, dict):
        raise refused(4040, "sender is required")
    role, external_id = sender.get("role"), sender.get("externalId")
    if role not in ROLES:
        raise refused(4040, "sender.role must be customer or agent")
    if not valid_id(external_id, MAX_EXTERNAL_ID):
        raise refused(4040, f"sender.externalId must be 1 to {MAX_EXTERNAL_ID} printable characters")
    language = msg.get("language", "en-US")
    if not isinstance(language, str):
        raise refused(4040, "language must be a string")
    rate = msg.get("samplingRate", SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise refused(4040, "samplingRate must be a number")
    if rate != SAMPLE_RATE:
        raise refused(4053, "sample rate not supported")
    if msg.get("encoding", "L16") != "L16":
        raise refused(4051, "encoding not supported")
    flags = {}
    for name, default in (("smartFormatting", True), ("detailedToken", False), ("audioRecordingAllowed", False)):
        value = msg.get(name, default)
        if not isinstance(value, bool):
            raise refused(4040, f"{name} must be a boolean")
        flags[name] = value
    redaction = msg.get("redactionOutput", "redacted")
    if redaction not in REDACTION_OUTPUTS:
        raise refused(4040, "redactionOutput must be redacted, unredacted or redacted_and_unredacted")
    if flags["detailedToken"] and redaction != "unredacted":
        raise refused(4040, "detailedToken requires redactionOutput unredacted")
    params = StreamParams(language=language, detailed_token=flags["detailedToken"],
                          audio_recording_allowed=flags["audioRecordingAllowed"], redaction_output=redaction,
                          smart_formatting=flags["smartFormatting"], surface="asapp",
                          external_ids={role: external_id})
    return role, external_id, params


def vocabulary_status(msg: dict[str, Any]) -> dict[str, str]:
    """The vocabularyResponse status. The engine has no phrase biasing, so a well-formed update is
    answered 4084 (the phrase limit of this server is zero) rather than an OK for work not done;
    nothing is kept."""
    phrases = msg.get("phrases")
    if not isinstance(phrases, list):
        return status(4091, "invalid vocabulary format")
    for p in phrases:
        if not isinstance(p, dict) or not isinstance(p.get("phrase"), str) or not p["phrase"].strip():
            return status(4091, "invalid vocabulary format")
        sounds = p.get("soundsLike", [])
        if not isinstance(sounds, list) or not all(isinstance(s, str) for s in sounds):
            return status(4091, "invalid vocabulary format")
        if p.get("category") not in VOCABULARY_CATEGORIES:
            return status(4091, "invalid vocabulary format")
    return status(4084, "custom vocabulary is not supported by this server: phrases are not applied")


def tokens(words: Iterable[Word] | None) -> list[dict[str, Any]]:
    """detailedToken tokens: content without its punctuation, which goes in punctuationBefore/After."""
    out = []
    for w in words or ():
        text = w.text.strip()
        core = text.strip(_PUNCT)
        if not core:  # a token of punctuation only stays as it is
            core = text
        before = text[: len(text) - len(text.lstrip(_PUNCT))] if core != text else ""
        after = text[len(text.rstrip(_PUNCT)):] if core != text else ""
        token: dict[str, Any] = {"content": core, "start": w.start_ms, "end": w.end_ms}
        if before:
            token["punctuationBefore"] = before
        if after:
            token["punctuationAfter"] = after
        out.append(token)
    return out


def transcript(ev: UtteranceEvent) -> dict[str, Any]:
    entry: dict[str, Any] = {"text": ev.text}
    if ev.unredacted_text is not None:
        entry["unredactedText"] = ev.unredacted_text
    if ev.words is not None:
        entry["tokens"] = tokens(ev.words)
    return {"message": "transcript", "start": ev.start_ms, "end": ev.end_ms, "utterance": [entry]}


def start_response(stream_id: str) -> dict[str, Any]:
    return {"message": "startResponse", "streamID": stream_id, "status": status(1000, "OK")}


def final_response(stream_id: str | None, code: int, description: str, summary: StreamSummary | None) -> dict[str, Any]:
    return {"message": "finalResponse", "streamId": stream_id, "status": status(code, description),
            "summary": (summary or StreamSummary(0, 0, 0, 0)).as_camel()}
