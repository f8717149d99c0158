"""Calls, their events, stream intervals, utterances and recordings: writes from call events, reads for the APIs.

Every method is blocking: call writes through `Database.write` (the single writer thread, which keeps
them in publish order) and reads through `Database.read`. Tenant isolation lives here: every read
that starts from a guid takes the caller's tenant, and another tenant's call is simply not found.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from callscribe.asr.types import Word
from callscribe.calls.events import CallEvent, CallRef, CallStateEvent, UtteranceEvent
from callscribe.store.db import Database
from callscribe.store.models import Call, CallEventRow, OutboxRow, Recording, StreamInterval, Utterance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewOutbox:
    """A webhook to enqueue in the same transaction as the event that caused it."""

    msg_id: str
    ordering_key: str
    payload: str  # the exact JSON body


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds and a Z, as the ASAPP messages API shows."""
    return None if dt is None else dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pick(d: dict, *names: str, default: Any = None) -> Any:
    """The first of `names` present in `d` (the registry's dicts may use snake or camel case)."""
    for name in names:
        if name in d and d[name] is not None:
            return d[name]
    return default


def _legs_of(data: dict) -> list[dict]:
    """The legs of a streaming-started event as dicts carrying their role."""
    legs = data.get("legs", data)
    if isinstance(legs, dict):
        legs = [dict(v, role=v.get("role", k)) for k, v in legs.items() if isinstance(v, dict)]
    return [leg for leg in legs if isinstance(leg, dict) and _pick(leg, "stream_id", "streamId")]


def _summaries_of(data: dict) -> dict[str, dict]:
    """role -> summary dict of a streaming-stopped event."""
    raw = _pick(data, "summaries", "summary", default=data)
    if isinstance(raw, list):
        return {s["role"]: s for s in raw if isinstance(s, dict) and "role" in s}
    return {k: v for k, v in raw.items() if isinstance(v, dict)}


class CallRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Writes ---------------------------------------------------------------------------------

    def save_events(self, items: Sequence[tuple[CallEvent, NewOutbox | None]]) -> None:
        """Persist events (and their outbox rows) in one transaction. Partials are ignored."""
        with self.db.sessions.begin() as s:
            for event, outbox in items:
                self._save_one(s, event, outbox)

    def _save_one(self, s: Session, event: CallEvent, outbox: NewOutbox | None) -> None:
        if isinstance(event, UtteranceEvent) and event.kind != "final":
            return
        call = self._ensure_call(s, event.call, event.created_at)
        call.last_seq = max(call.last_seq or 0, event.seq)
        if isinstance(event, UtteranceEvent):
            s.add(Utterance(
                call_id=call.call_id, seq=event.seq, role=event.role, external_id=event.external_id,
                stream_id=event.stream_id, utterance_no=event.utterance, start_ms=event.start_ms,
                end_ms=event.end_ms, text=event.text, unredacted_text=event.unredacted_text,
                words=[asdict(w) for w in event.words] if event.words is not None else None,
                redaction_output=event.redaction_output, created_at=event.created_at,
            ))
            if outbox is not None:
                s.add(OutboxRow(msg_id=outbox.msg_id, ordering_key=outbox.ordering_key, payload=outbox.payload,
                                created_at=event.created_at, attempts=0, next_attempt_at=event.created_at))
            return
        s.add(CallEventRow(call_id=call.call_id, seq=event.seq, state=event.state,
                           data=jsonable(event.data), created_at=event.created_at))
        if event.state in _LIFECYCLE and not (call.ended_at is not None and event.state.startswith("streaming-")):
            call.state = event.state
        handler = {
            "media-connected": self._media_connected,
            "streaming-started": self._streaming_started,
            "streaming-stopped": self._streaming_stopped,
            "media-ended": self._media_ended,
            "recording-saved": self._recording_saved,
        }.get(event.state)
        if handler is not None:
            handler(s, call, event)

    def _ensure_call(self, s: Session, ref: CallRef, when: datetime) -> Call:
        call = s.get(Call, ref.call_id)
        if call is None:
            call = Call(call_id=ref.call_id, tenant=ref.tenant, namespace=ref.namespace, guid=ref.guid,
                        state="media-connected", created_at=when, last_seq=0)
            s.add(call)
        return call

    def _media_connected(self, s: Session, call: Call, event: CallStateEvent) -> None:
        call.ended_at = None  # media may reconnect to a call that had ended

    def _streaming_started(self, s: Session, call: Call, event: CallStateEvent) -> None:
        data = jsonable(event.data)
        shared = _pick(data, "params", "autotranscribeParams", default={})
        for leg in _legs_of(data):
            params = {**shared, **_pick(leg, "params", "autotranscribeParams", default={})}
            s.add(StreamInterval(
                call_id=call.call_id, stream_id=str(_pick(leg, "stream_id", "streamId")), role=str(leg.get("role")),
                external_id=_pick(leg, "external_id", "externalId", "customerId", "agentId"),
                started_at=event.created_at,
                redaction_output=str(_pick(params, "redactionOutput", "redaction_output", default="redacted")),
                detailed_token=bool(_pick(params, "detailedToken", "detailed_token", default=False)),
                audio_recording_allowed=bool(_pick(params, "audioRecordingAllowed", "audio_recording_allowed",
                                                   default=False)),
                params=jsonable(params),
            ))

    def _streaming_stopped(self, s: Session, call: Call, event: CallStateEvent) -> None:
        for role, summary in _summaries_of(jsonable(event.data)).items():
            q = select(StreamInterval).where(StreamInterval.call_id == call.call_id, StreamInterval.role == role)
            stream_id = _pick(summary, "stream_id", "streamId")
            q = q.where(StreamInterval.stream_id == str(stream_id)) if stream_id else q.where(
                StreamInterval.stopped_at.is_(None))
            interval = s.scalars(q.order_by(StreamInterval.id.desc()).limit(1)).first()
            if interval is None:
                log.warning("streaming-stopped for %s %s: no open interval", call.call_id, role)
                continue
            interval.stopped_at = event.created_at
            interval.total_audio_bytes = _pick(summary, "total_audio_bytes", "totalAudioBytes")
            interval.audio_duration_ms = _pick(summary, "audio_duration_ms", "audioDurationMs")
            interval.streaming_seconds = _pick(summary, "streaming_seconds", "streamingSeconds")
            interval.transcripts = _pick(summary, "transcripts")

    def _media_ended(self, s: Session, call: Call, event: CallStateEvent) -> None:
        call.ended_at = event.created_at
        # An interval the call outlived without a stop is closed by the end of the media.
        s.execute(update(StreamInterval)
                  .where(StreamInterval.call_id == call.call_id, StreamInterval.stopped_at.is_(None))
                  .values(stopped_at=event.created_at))

    def _recording_saved(self, s: Session, call: Call, event: CallStateEvent) -> None:
        d = jsonable(event.data)
        s.add(Recording(call_id=call.call_id, role=str(d.get("role")), stream_id=str(_pick(d, "stream_id", "streamId")),
                        path=str(d.get("path")), duration_ms=_pick(d, "duration_ms", "durationMs"),
                        created_at=event.created_at))

    # Reads ----------------------------------------------------------------------------------

    def list_calls(self, tenant: str, limit: int = 50) -> list[dict]:
        """The tenant's calls, newest first."""
        with self.db.sessions() as s:
            rows = s.scalars(select(Call).where(Call.tenant == tenant)
                             .order_by(Call.created_at.desc(), Call.call_id).limit(limit)).all()
            return [_call_dict(c) for c in rows]

    def find_call(self, tenant: str, guid: str) -> dict | None:
        """The tenant's newest call with this guid (any namespace), or None."""
        with self.db.sessions() as s:
            call = self._newest(s, tenant, guid)
            return _call_dict(call) if call else None

    def call_detail(self, tenant: str, guid: str, call_id: str | None = None) -> dict | None:
        """The newest call with this guid (or exactly `call_id`), with its stream intervals and recordings."""
        with self.db.sessions() as s:
            call = self._newest(s, tenant, guid, call_id)
            if call is None:
                return None
            out = _call_dict(call)
            intervals = s.scalars(select(StreamInterval).where(StreamInterval.call_id == call.call_id)
                                  .order_by(StreamInterval.id)).all()
            out["streams"] = [_interval_dict(i) for i in intervals]
            recs = s.scalars(select(Recording).where(Recording.call_id == call.call_id).order_by(Recording.id)).all()
            out["recordings"] = [{"role": r.role, "streamId": r.stream_id, "durationMs": r.duration_ms,
                                  "createdAt": iso(r.created_at)} for r in recs]
            return out

    def recording_path(self, tenant: str, guid: str, stream_id: str, role: str) -> str | None:
        """The stored path (relative to the data dir) of one leg's recording, if the tenant owns it."""
        with self.db.sessions() as s:
            return s.scalars(
                select(Recording.path).join(Call, Call.call_id == Recording.call_id)
                .where(Call.tenant == tenant, Call.guid == guid, Recording.stream_id == stream_id,
                       Recording.role == role)
                .order_by(Recording.id.desc()).limit(1)).first()

    def messages(self, tenant: str, guid: str, limit: int = 1000) -> list[dict] | None:
        """Final utterances of every call of the tenant with this guid (all namespaces and legs),
        oldest first; None when the tenant has no such call."""
        with self.db.sessions() as s:
            calls = {c.call_id: c for c in s.scalars(
                select(Call).where(Call.tenant == tenant, Call.guid == guid))}
            if not calls:
                return None
            rows = s.scalars(select(Utterance).where(Utterance.call_id.in_(calls))
                             .order_by(Utterance.created_at, Utterance.id).limit(limit)).all()
            items = []
            for u in rows:
                # The time it was said: the call's media start plus the offset into the leg's media.
                spoken = calls[u.call_id].created_at + timedelta(milliseconds=u.start_ms)
                item = {"text": u.text, "sender": {"role": u.role, "externalId": u.external_id},
                        "messageId": f"{u.call_id}-{u.seq}", "createdTimestamp": iso(u.created_at),
                        "clientTimestamp": iso(spoken)}
                if u.redaction_output == "redacted_and_unredacted" and u.unredacted_text is not None:
                    item["unredactedText"] = u.unredacted_text
                items.append(item)
            return items

    def events_since(self, call_id: str, since: int) -> list[CallEvent]:
        """Stored events (finals and state changes) of a call with seq > since, in seq order."""
        with self.db.sessions() as s:
            call = s.get(Call, call_id)
            if call is None:
                return []
            ref = CallRef(call.call_id, call.tenant, call.namespace, call.guid)
            events: list[CallEvent] = [
                CallStateEvent(ref, r.seq, r.state, dict(r.data or {}), r.created_at)
                for r in s.scalars(select(CallEventRow).where(CallEventRow.call_id == call_id,
                                                              CallEventRow.seq > since))]
            for u in s.scalars(select(Utterance).where(Utterance.call_id == call_id, Utterance.seq > since)):
                events.append(UtteranceEvent(
                    ref, u.seq, "final", u.role, u.external_id, u.stream_id, u.utterance_no, u.start_ms, u.end_ms,
                    u.text, u.unredacted_text,
                    tuple(Word(**w) for w in u.words) if u.words is not None else None,
                    u.redaction_output, u.created_at))
            return sorted(events, key=lambda e: e.seq)

    @staticmethod
    def _newest(s: Session, tenant: str, guid: str, call_id: str | None = None) -> Call | None:
        q = select(Call).where(Call.tenant == tenant, Call.guid == guid)
        if call_id is not None:
            q = q.where(Call.call_id == call_id)
        return s.scalars(q.order_by(Call.created_at.desc()).limit(1)).first()


# The call-level states (others, such as recording-saved, leave the call's state as it was), and
# their names in the native API, which are the registry's: connected | streaming | ended.
_LIFECYCLE = {"media-connected": "connected", "streaming-started": "streaming", "streaming-stopped": "connected",
              "media-ended": "ended"}


def _call_dict(c: Call) -> dict:
    return {"callId": c.call_id, "guid": c.guid, "namespace": c.namespace, "state": _LIFECYCLE.get(c.state, c.state),
            "createdAt": iso(c.created_at), "endedAt": iso(c.ended_at), "lastSeq": c.last_seq}


def _interval_dict(i: StreamInterval) -> dict:
    summary = None
    if i.stopped_at is not None and i.total_audio_bytes is not None:
        summary = {"totalAudioBytes": i.total_audio_bytes, "audioDurationMs": i.audio_duration_ms,
                   "streamingSeconds": i.streaming_seconds, "transcripts": i.transcripts}
    return {"streamId": i.stream_id, "role": i.role, "externalId": i.external_id,
            "startedAt": iso(i.started_at), "stoppedAt": iso(i.stopped_at),
            "redactionOutput": i.redaction_output, "detailedToken": i.detailed_token,
            "audioRecordingAllowed": i.audio_recording_allowed, "params": i.params,
            "summary": summary}


def jsonable(value: Any) -> Any:
    """Event data as JSON-safe values (summaries may arrive as dataclasses, times as datetimes)."""
    if hasattr(value, "__dataclass_fields__"):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
