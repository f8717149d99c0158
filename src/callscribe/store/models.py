"""SQL tables: calls, their state events, stream intervals, final utterances, recordings, webhook outbox.

The same models serve SQLite and PostgreSQL. Times are stored as UTC (naive on SQLite, which has no
time zones) and always read back as aware UTC datetimes. The Alembic migrations in
`store/migrations/versions/` create exactly these tables; change both together.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Call(Base):
    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    namespace: Mapped[str] = mapped_column(String(64))
    guid: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32))  # the last CallStateEvent.state
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_calls_tenant_guid", "tenant", "guid"),
        Index("ix_calls_tenant_created", "tenant", "created_at"),
    )


class CallEventRow(Base):
    """Every CallStateEvent, kept so a WebSocket subscriber can replay state changes it missed."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_call_events_call_seq"),)


class StreamInterval(Base):
    """One leg over one streaming interval (start-streaming to stop-streaming)."""

    __tablename__ = "stream_intervals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"))
    stream_id: Mapped[str] = mapped_column(String(128))
    participant: Mapped[str] = mapped_column(String(128))
    participant_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    redaction_output: Mapped[str] = mapped_column(String(32), default="redacted")
    detailed_token: Mapped[bool] = mapped_column(Boolean, default=False)
    audio_recording_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict] = mapped_column(JSON)  # everything start-streaming said, as published
    total_audio_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    audio_duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    streaming_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transcripts: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (
        UniqueConstraint("call_id", "stream_id", "participant", name="uq_stream_intervals_call_stream_participant"),
    )


class Utterance(Base):
    """A final utterance as delivered: `text` obeys the stream's redactionOutput."""

    __tablename__ = "utterances"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    participant: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(255))
    stream_id: Mapped[str] = mapped_column(String(128))
    utterance_no: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    unredacted_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    words: Mapped[list | None] = mapped_column(JSON, nullable=True)
    redaction_output: Mapped[str] = mapped_column(String(32), default="redacted")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_utterances_call_seq"),)


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.call_id", ondelete="CASCADE"))
    participant: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(64))
    stream_id: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(Text)  # relative to the data dir
    duration_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("call_id", "stream_id", "participant", name="uq_recordings_call_stream_participant"),)


class OutboxRow(Base):
    """A webhook waiting for (or done with) delivery. `payload` is the exact JSON body sent.

    Rows of one ordering key (call + participant) are delivered strictly in id order; `msg_id` is the
    Standard Webhooks `webhook-id`, the same on every retry so receivers can de-duplicate.
    """

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    ordering_key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set when the row became a dead letter (refused, or past the retry budget); cleared on replay.
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The call the row belongs to, so dead letters can be listed per tenant (set when it dies).
    call_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        # The dispatcher's only hot query: the oldest undelivered row of each key.
        Index("ix_outbox_pending", "ordering_key", "id",
              sqlite_where=text("delivered_at IS NULL"), postgresql_where=text("delivered_at IS NULL")),
        Index("ix_outbox_delivered_at", "delivered_at"),
        Index("ix_outbox_dead", "call_id", "dead_at",
              sqlite_where=text("dead_at IS NOT NULL"), postgresql_where=text("dead_at IS NOT NULL")),
    )
