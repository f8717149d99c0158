"""Calls, their events, stream intervals, utterances and recordings: writes from call events, reads for the APIs.

Reads return records (plain dataclasses); each API shapes them into its own wire form.
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
from callscribe.calls.events import (END_STATES, AnyEvent, CallEvent, CallRef, CallStateEvent, SettledEvent,
                                     StreamSummary, UtteranceEvent, is_end)
from callscribe.calls.media import MAX_GUID, valid_id
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
    """The legs of a streaming-started event as dicts carrying their participant and role."""
    legs = data.get("legs", data)
    if isinstance(legs, dict):
        legs = [dict(v, participant=v.get("participant", k), role=v.get("role", k))
                for k, v in legs.items() if isinstance(v, dict)]
    return [leg for leg in legs if isinstance(leg, dict) and _pick(leg, "stream_id", "streamId")]


def _summaries_of(data: dict) -> dict[str, dict]:
    """participant -> summary dict of a streaming-stopped event."""
    raw = _pick(data, "summaries", "summary", default=data)
    if isinstance(raw, list):
        return {str(s.get("participant", s["role"])): s for s in raw if isinstance(s, dict) and "role" in s}
    return {k: v for k, v in raw.items() if isinstance(v, dict)}


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    tenant: str
    namespace: str
    guid: str
    state: str  # connected | streaming | ended
    created_at: datetime
    ended_at: datetime | None
    last_seq: int


@dataclass(frozen=True)
class IntervalRecord:
    """One participant's streaming interval; `summary` once it is stopped."""

    stream_id: str
    participant: str
    participant_name: str
    role: str
    external_id: str | None
    started_at: datetime
    stopped_at: datetime | None
    redaction_output: str
    detailed_token: bool
    audio_recording_allowed: bool
    params: dict[str, Any]
    summary: StreamSummary | None


@dataclass(frozen=True)
class RecordingRecord:
    participant: str
    role: str
    stream_id: str
    duration_ms: int | None
    created_at: datetime


@dataclass(frozen=True)
class CallDetail:
    call: CallRecord
    intervals: list[IntervalRecord]
    recordings: list[RecordingRecord]


@dataclass(frozen=True)
class MessageRecord:
    """A stored final utterance, for transcript retrieval."""

    call_id: str
    seq: int
    participant: str
    role: str
    external_id: str
    text: str
    unredacted_text: str | None
    redaction_output: str
    created_at: datetime
    spoken_at: datetime  # the call's media start plus the utterance's offset


class CallRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Writes ---------------------------------------------------------------------------------

    def save_events(self, items: Sequence[tuple[AnyEvent, NewOutbox | Sequence[NewOutbox] | None]]) -> None:
        """Persist events (and their outbox rows, none, one or several each) in one transaction.
        Partials are ignored; a settled mark is kept only as the outbox rows it made."""
        with self.db.sessions.begin() as s:
            for event, outbox in items:
                self._save_one(s, event, outbox)

    def _save_one(self, s: Session, event: AnyEvent, outboxes: NewOutbox | Sequence[NewOutbox] | None) -> None:
        if isinstance(event, UtteranceEvent) and event.kind != "final":
            return
        call = self._ensure_call(s, event.call, event.created_at)
        if not isinstance(event, SettledEvent):
            call.last_seq = max(call.last_seq or 0, event.seq)
        for outbox in [outboxes] if isinstance(outboxes, NewOutbox) else outboxes or ():
            # a surface's webhooks for this event, stored with it or not at all
            s.add(OutboxRow(msg_id=outbox.msg_id, ordering_key=outbox.ordering_key, payload=outbox.payload,
                            created_at=event.created_at, attempts=0, next_attempt_at=event.created_at))
        if isinstance(event, UtteranceEvent):
            s.add(Utterance(
                call_id=call.call_id, seq=event.seq, participant=event.participant, role=event.role,
                external_id=event.external_id,
                stream_id=event.stream_id, utterance_no=event.utterance, start_ms=event.start_ms,
                end_ms=event.end_ms, text=event.text, unredacted_text=event.unredacted_text,
                words=[asdict(w) for w in event.words] if event.words is not None else None,
                redaction_output=event.redaction_output, created_at=event.created_at,
            ))
            return
        if isinstance(event, SettledEvent):
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

    def close_interrupted(self, when: datetime) -> list[str]:
        """Calls left open by a process that stopped without ending them (a crash, kill -9): each
        gets a media-interrupted event, its open intervals are closed, and it reads as interrupted.
        Run at start, before any media is taken. Returns their call ids."""
        with self.db.sessions.begin() as s:
            calls = s.scalars(select(Call).where(Call.ended_at.is_(None))).all()
            for call in calls:
                call.last_seq = (call.last_seq or 0) + 1
                s.add(CallEventRow(call_id=call.call_id, seq=call.last_seq, state="media-interrupted",
                                   data={"reason": "the server stopped without ending the call"}, created_at=when))
                call.state, call.ended_at = "media-interrupted", when
                s.execute(update(StreamInterval)
                          .where(StreamInterval.call_id == call.call_id, StreamInterval.stopped_at.is_(None))
                          .values(stopped_at=when))
            return [c.call_id for c in calls]

    def ended_among(self, call_ids: Sequence[str]) -> set[str]:
        """Those of these calls that have ended (cluster mode: a node relaying a call's events from
        Redis looks for an end whose event it never got)."""
        if not call_ids:
            return set()
        with self.db.sessions() as s:
            return set(s.scalars(select(Call.call_id).where(Call.call_id.in_(list(call_ids)),
                                                           Call.ended_at.is_not(None))))

    def open_calls(self, created_before: datetime) -> list[CallRef]:
        """Calls not ended that began before `created_before` (cluster mode: the survivors look
        for those whose node is gone)."""
        with self.db.sessions() as s:
            rows = s.scalars(select(Call).where(Call.ended_at.is_(None), Call.created_at < created_before)).all()
            return [CallRef(c.call_id, c.tenant, c.namespace, c.guid) for c in rows]

    def interrupt_calls(self, call_ids: Sequence[str], when: datetime, reason: str) -> list[CallStateEvent]:
        """Close these calls as close_interrupted does, those still open and not being closed by
        another node (FOR UPDATE SKIP LOCKED); returns the media-interrupted events written."""
        out: list[CallStateEvent] = []
        with self.db.sessions.begin() as s:
            calls = s.scalars(select(Call).where(Call.call_id.in_(list(call_ids)), Call.ended_at.is_(None))
                              .with_for_update(skip_locked=True)).all()
            for call in calls:
                call.last_seq = (call.last_seq or 0) + 1
                data = {"reason": reason}
                s.add(CallEventRow(call_id=call.call_id, seq=call.last_seq, state="media-interrupted",
                                   data=data, created_at=when))
                call.state, call.ended_at = "media-interrupted", when
                s.execute(update(StreamInterval)
                          .where(StreamInterval.call_id == call.call_id, StreamInterval.stopped_at.is_(None))
                          .values(stopped_at=when))
                out.append(CallStateEvent(CallRef(call.call_id, call.tenant, call.namespace, call.guid),
                                          call.last_seq, "media-interrupted", data, when))
        return out

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
                call_id=call.call_id, stream_id=str(_pick(leg, "stream_id", "streamId")),
                participant=str(leg["participant"]), participant_name=leg.get("name") or None, role=str(leg["role"]),
                external_id=_pick(leg, "external_id", "externalId", "customerId", "agentId"),
                started_at=event.created_at,
                redaction_output=str(_pick(params, "redactionOutput", "redaction_output", default="redacted")),
                detailed_token=bool(_pick(params, "detailedToken", "detailed_token", default=False)),
                audio_recording_allowed=bool(_pick(params, "audioRecordingAllowed", "audio_recording_allowed",
                                                   default=False)),
                params=jsonable(params),
            ))

    def _streaming_stopped(self, s: Session, call: Call, event: CallStateEvent) -> None:
        for participant, summary in _summaries_of(jsonable(event.data)).items():
            q = select(StreamInterval).where(StreamInterval.call_id == call.call_id,
                                             StreamInterval.participant == participant)
            stream_id = _pick(summary, "stream_id", "streamId")
            q = q.where(StreamInterval.stream_id == str(stream_id)) if stream_id else q.where(
                StreamInterval.stopped_at.is_(None))
            interval = s.scalars(q.order_by(StreamInterval.id.desc()).limit(1)).first()
            if interval is None:
                log.warning("streaming-stopped for %s %s: no open interval", call.call_id, participant)
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
        s.add(Recording(call_id=call.call_id, participant=str(d.get("participant") or d.get("role")),
                        role=str(d.get("role")), stream_id=str(_pick(d, "stream_id", "streamId")),
                        path=str(d.get("path")), duration_ms=_pick(d, "duration_ms", "durationMs"),
                        created_at=event.created_at))

    # Reads: records, which each API shapes into its own wire form ---------------------------------

    def list_calls(self, tenant: str, limit: int = 50) -> list[CallRecord]:
        """The tenant's calls, newest first."""
        with self.db.sessions() as s:
            rows = s.scalars(select(Call).where(Call.tenant == tenant)
                             .order_by(Call.created_at.desc(), Call.call_id).limit(limit)).all()
            return [_call_record(c) for c in rows]

    def find_call(self, tenant: str, guid: str) -> CallRecord | None:
        """The tenant's newest call with this guid (any namespace), or None."""
        with self.db.sessions() as s:
            call = self._newest(s, tenant, guid)
            return _call_record(call) if call else None

    def call_detail(self, tenant: str, guid: str, call_id: str | None = None) -> CallDetail | None:
        """The newest call with this guid (or exactly `call_id`), with its stream intervals and recordings."""
        with self.db.sessions() as s:
            call = self._newest(s, tenant, guid, call_id)
            if call is None:
                return None
            intervals = s.scalars(select(StreamInterval).where(StreamInterval.call_id == call.call_id)
                                  .order_by(StreamInterval.id)).all()
            recs = s.scalars(select(Recording).where(Recording.call_id == call.call_id).order_by(Recording.id)).all()
            return CallDetail(_call_record(call), [_interval_record(i) for i in intervals],
                              [RecordingRecord(r.participant, r.role, r.stream_id, r.duration_ms, r.created_at)
                               for r in recs])

    def recording_path(self, tenant: str, guid: str, stream_id: str, participant: str) -> str | None:
        """The stored path (relative to the data dir) of one leg's recording, if the tenant owns it."""
        if not _storable(guid, stream_id, participant):
            return None
        with self.db.sessions() as s:
            return s.scalars(
                select(Recording.path).join(Call, Call.call_id == Recording.call_id)
                .where(Call.tenant == tenant, Call.guid == guid, Recording.stream_id == stream_id,
                       Recording.participant == participant)
                .order_by(Recording.id.desc()).limit(1)).first()

    def messages(self, tenant: str, guid: str, limit: int = 1000) -> list[MessageRecord] | None:
        """Final utterances of every call of the tenant with this guid (all namespaces and legs),
        oldest first; None when the tenant has no such call."""
        if not _storable(guid):
            return None
        with self.db.sessions() as s:
            calls = {c.call_id: c for c in s.scalars(
                select(Call).where(Call.tenant == tenant, Call.guid == guid))}
            if not calls:
                return None
            rows = s.scalars(select(Utterance).where(Utterance.call_id.in_(calls))
                             .order_by(Utterance.created_at, Utterance.id).limit(limit)).all()
            # The time it was said: the call's media start plus the offset into the leg's media.
            return [MessageRecord(u.call_id, u.seq, u.participant, u.role, u.external_id, u.text, u.unredacted_text,
                                  u.redaction_output, u.created_at,
                                  calls[u.call_id].created_at + timedelta(milliseconds=u.start_ms))
                    for u in rows]

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
            ends = [e for e in events if is_end(e)]
            if call.ended_at is not None and not ends:
                # Its end whatever its seq: a node's loss is marked above the stored seqs only, at or
                # below partials the subscriber may have had live (`since`).
                end = s.scalars(select(CallEventRow).where(CallEventRow.call_id == call_id,
                                                           CallEventRow.state.in_(END_STATES))
                                .order_by(CallEventRow.seq.desc()).limit(1)).first()
                if end is not None:
                    events.append(CallStateEvent(ref, end.seq, end.state, dict(end.data or {}), end.created_at))
            for u in s.scalars(select(Utterance).where(Utterance.call_id == call_id, Utterance.seq > since)):
                events.append(UtteranceEvent(
                    ref, u.seq, "final", u.role, u.external_id, u.stream_id, u.utterance_no, u.start_ms, u.end_ms,
                    u.text, u.unredacted_text,
                    tuple(Word(**w) for w in u.words) if u.words is not None else None,
                    u.redaction_output, u.created_at, participant=u.participant))
            return sorted(events, key=lambda e: e.seq)

    @staticmethod
    def _newest(s: Session, tenant: str, guid: str, call_id: str | None = None) -> Call | None:
        if not _storable(guid):
            return None
        q = select(Call).where(Call.tenant == tenant, Call.guid == guid)
        if call_id is not None:
            q = q.where(Call.call_id == call_id)
        return s.scalars(q.order_by(Call.created_at.desc()).limit(1)).first()


# The call-level states (others, such as recording-saved, leave the call's state as it was), and
# their names in the native API, which are the registry's: connected | streaming | ended.
_LIFECYCLE = {"media-connected": "connected", "streaming-started": "streaming", "streaming-stopped": "connected",
              "media-ended": "ended", "media-interrupted": "interrupted"}


def _storable(*values: str) -> bool:
    """Whether a looked-up value could be in the database at all; PostgreSQL refuses a NUL in a
    query parameter, and no stored id has one (the registry refuses such ids)."""
    return all(valid_id(v, MAX_GUID) for v in values)


def _call_record(c: Call) -> CallRecord:
    return CallRecord(c.call_id, c.tenant, c.namespace, c.guid, _LIFECYCLE.get(c.state, c.state), c.created_at,
                      c.ended_at, c.last_seq)


def _interval_record(i: StreamInterval) -> IntervalRecord:
    summary = None
    if i.stopped_at is not None and i.total_audio_bytes is not None:
        summary = StreamSummary(i.total_audio_bytes, i.audio_duration_ms or 0, i.streaming_seconds or 0,
                                i.transcripts or 0)
    return IntervalRecord(i.stream_id, i.participant, i.participant_name or "", i.role, i.external_id, i.started_at,
                          i.stopped_at, i.redaction_output, i.detailed_token, i.audio_recording_allowed,
                          dict(i.params or {}), summary)


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
