"""JSON forms of what crosses between nodes: start parameters, legs with their summaries, call
events, and registry errors (so a command carried out on another node raises the same exception
here, and the control surface answers with the same code)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from callscribe.asr.types import Word
from callscribe.calls import registry as reg
from callscribe.calls.events import CallEvent, CallRef, CallStateEvent, StreamSummary, UtteranceEvent
from callscribe.calls.leg import ParticipantNames, StreamParams
from callscribe.calls.media import Participant
from callscribe.redact.policy import RedactionPolicy


class NotHere(Exception):
    """A forwarded start reached a node whose call has no live media (any more): the asking node
    goes on looking for the media across the cluster, as one node waits for it."""


# Errors a remote command may raise, by name; anything else becomes a NotReady (503 on every surface).
ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (
    reg.CallNotFound, reg.AlreadyStarted, reg.AlreadyStopped, reg.MediaEnding, reg.NoCapacity, reg.NotReady,
    reg.UnsupportedLanguage, reg.BadIdentity, reg.ShuttingDown, reg.SourceFailed, NotHere)}


def params_json(params: StreamParams) -> dict[str, Any]:
    policy = params.redaction_policy
    return {
        "language": params.language, "detailed_token": params.detailed_token,
        "audio_recording_allowed": params.audio_recording_allowed, "redaction_output": params.redaction_output,
        "smart_formatting": params.smart_formatting, "partials": params.partials, "surface": params.surface,
        "participants": {track: asdict(p) for track, p in params.participants.items()},
        "external_ids": dict(params.external_ids), "options": dict(params.options),
        "endpoint_silence_ms": params.endpoint_silence_ms,
        "redaction_policy": None if policy is None else {
            "entities": sorted(policy.entities), "style": policy.style,
            "digit_run_lengths": sorted(policy.digit_run_lengths), "long_run_min": policy.long_run_min,
            "labels": [list(pair) for pair in policy.labels]},
    }


def params_from(data: dict[str, Any]) -> StreamParams:
    policy = data.get("redaction_policy")
    return StreamParams(
        language=data["language"], detailed_token=data["detailed_token"],
        audio_recording_allowed=data["audio_recording_allowed"], redaction_output=data["redaction_output"],
        smart_formatting=data["smart_formatting"], partials=data["partials"], surface=data["surface"],
        participants={track: Participant(**p) for track, p in data["participants"].items()},
        external_ids=data["external_ids"], options=data["options"],
        endpoint_silence_ms=data.get("endpoint_silence_ms"),
        redaction_policy=None if policy is None else RedactionPolicy(
            entities=frozenset(policy["entities"]), style=policy["style"],
            digit_run_lengths=frozenset(policy["digit_run_lengths"]), long_run_min=policy["long_run_min"],
            labels=tuple((a, b) for a, b in policy["labels"])),
    )


class RemoteLeg(ParticipantNames):
    """A leg that lives on another node, as a start or stop answered for it: what surfaces read."""

    def __init__(self, participant: Participant, stream_id: str, summary: StreamSummary) -> None:
        self.participant = participant
        self.stream_id = stream_id
        self._summary = summary

    def summary(self) -> StreamSummary:
        return self._summary

    def describe(self) -> dict[str, Any]:
        return {"participant": self.id, "role": self.role, "name": self.participant.name,
                "external_id": self.external_id, "stream_id": self.stream_id, "track": None}


def legs_json(legs: dict[str, Any]) -> dict[str, Any]:
    return {pid: {"participant": asdict(leg.participant), "stream_id": leg.stream_id,
                  "summary": leg.summary().as_dict()} for pid, leg in legs.items()}


def legs_from(data: dict[str, Any]) -> dict[str, Any]:
    return {pid: RemoteLeg(Participant(**d["participant"]), d["stream_id"], StreamSummary(**d["summary"]))
            for pid, d in data.items()}


def error_json(exc: BaseException) -> dict[str, Any]:
    name = type(exc).__name__
    return {"type": name if name in ERRORS else "NotReady", "message": str(exc),
            "kind": getattr(exc, "kind", None)}


def error_from(data: dict[str, Any]) -> Exception:
    cls = ERRORS.get(str(data.get("type")), reg.NotReady)
    message = str(data.get("message") or "")
    if cls is reg.SourceFailed:
        return reg.SourceFailed(message, str(data.get("kind") or "failed"))
    return cls(message) if message else cls()


def event_json(event: CallEvent) -> dict[str, Any]:
    ref = asdict(event.call)
    if isinstance(event, CallStateEvent):
        return {"t": "state", "call": ref, "seq": event.seq, "state": event.state, "data": _jsonable(event.data),
                "created_at": event.created_at.isoformat(), "surface": event.surface}
    return {"t": "utterance", "call": ref, "seq": event.seq, "kind": event.kind, "role": event.role,
            "external_id": event.external_id, "stream_id": event.stream_id, "utterance": event.utterance,
            "start_ms": event.start_ms, "end_ms": event.end_ms, "text": event.text,
            "unredacted_text": event.unredacted_text,
            "words": None if event.words is None else [asdict(w) for w in event.words],
            "redaction_output": event.redaction_output, "created_at": event.created_at.isoformat(),
            "participant": event.participant, "participant_name": event.participant_name, "surface": event.surface}


def event_from(data: dict[str, Any]) -> CallEvent:
    ref = CallRef(**data["call"])
    created = datetime.fromisoformat(data["created_at"])
    if data["t"] == "state":
        return CallStateEvent(ref, data["seq"], data["state"], data["data"], created, data.get("surface", ""))
    return UtteranceEvent(
        ref, data["seq"], data["kind"], data["role"], data["external_id"], data["stream_id"], data["utterance"],
        data["start_ms"], data["end_ms"], data["text"], data["unredacted_text"],
        None if data["words"] is None else tuple(Word(**w) for w in data["words"]),
        data["redaction_output"], created, participant=data["participant"],
        participant_name=data["participant_name"], surface=data["surface"])


def _jsonable(value: Any) -> Any:
    from callscribe.store.repository import jsonable

    return jsonable(value)
