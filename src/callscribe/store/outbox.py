"""The webhook outbox table: which rows are due, recording each attempt's outcome, and dead letters.

Rows of one ordering key are delivered one at a time in id order, so only the oldest pending row
of each key (its "head") is ever a candidate. A row is pending while it is neither delivered nor
dead; a dead letter steps aside so the rows after it go on, and a replay makes it pending again.
Every method is one short transaction; the dispatcher never holds one across an HTTP request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from callscribe.store.db import Database, affected
from callscribe.store.models import Call, OutboxRow

_PENDING = (OutboxRow.delivered_at.is_(None), OutboxRow.dead_at.is_(None))


@dataclass(frozen=True)
class OutboxJob:
    id: int
    msg_id: str
    ordering_key: str
    payload: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class DeadLetter:
    id: int
    msg_id: str
    call_id: str | None
    guid: str
    payload: str
    attempts: int
    last_error: str | None
    created_at: datetime
    dead_at: datetime | None  # never None as listed; typed as the column is


class OutboxRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def heads(self) -> list[OutboxJob]:
        """The oldest pending row of every ordering key, due or not."""
        oldest = (select(func.min(OutboxRow.id).label("id"))
                  .where(*_PENDING)
                  .group_by(OutboxRow.ordering_key).subquery())
        with self.db.sessions() as s:
            rows = s.scalars(select(OutboxRow).join(oldest, OutboxRow.id == oldest.c.id)
                             .order_by(OutboxRow.next_attempt_at, OutboxRow.id)).all()
            return [OutboxJob(r.id, r.msg_id, r.ordering_key, r.payload, r.attempts, r.next_attempt_at,
                              r.created_at) for r in rows]

    def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[OutboxJob]:
        """Several dispatchers on one PostgreSQL (cluster mode): take up to `limit` due heads that no
        other dispatcher is claiming (FOR UPDATE SKIP LOCKED) and lease them until `lease_until`, so
        no other one sends them meanwhile. A lease left by a dead dispatcher simply runs out and the
        row is due again. Only heads are claimable, so one leg's rows still go one at a time."""
        oldest = (select(func.min(OutboxRow.id)).where(*_PENDING).group_by(OutboxRow.ordering_key))
        with self.db.sessions.begin() as s:
            rows = s.scalars(select(OutboxRow)
                             .where(OutboxRow.id.in_(oldest), *_PENDING, OutboxRow.next_attempt_at <= now)
                             .order_by(OutboxRow.next_attempt_at, OutboxRow.id).limit(limit)
                             .with_for_update(skip_locked=True)).all()
            # next_attempt_at of a claimed job is its lease: mark_* are fenced on it (`lease=`).
            jobs = [OutboxJob(r.id, r.msg_id, r.ordering_key, r.payload, r.attempts, lease_until,
                              r.created_at) for r in rows]
            if rows:
                s.execute(update(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows]))
                          .values(next_attempt_at=lease_until))
            return jobs

    def make_due(self, row_ids: list[int], when: datetime, *, leases: list[datetime] | None = None) -> int:
        """Hand back claimed rows still pending (a node stopping mid-send), due at `when`; with
        `leases` (one per row), only those still under the lease claimed."""
        if not row_ids:
            return 0
        with self.db.sessions.begin() as s:
            if leases is None:
                return affected(s.execute(update(OutboxRow).where(OutboxRow.id.in_(row_ids), *_PENDING)
                                          .values(next_attempt_at=when)))
            return sum(affected(s.execute(update(OutboxRow).where(OutboxRow.id == row_id, *_fence(lease))
                                          .values(next_attempt_at=when))) for row_id, lease in zip(row_ids, leases))

    def pending_count(self) -> int:
        with self.db.sessions() as s:
            return s.scalar(select(func.count()).select_from(OutboxRow).where(*_PENDING)) or 0

    def dead_count(self) -> int:
        with self.db.sessions() as s:
            return s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.dead_at.is_not(None))) or 0

    def mark_dead(self, row_id: int, attempts: int, when: datetime, error: str, call_id: str | None, *,
                  lease: datetime | None = None) -> bool:
        """The row will not be sent again unless replayed; the next row of its key becomes the head.
        With `lease` (cluster: the claim's lease), only while the row is still under that lease."""
        with self.db.sessions.begin() as s:
            return affected(s.execute(update(OutboxRow).where(OutboxRow.id == row_id, *_fence(lease))
                      .values(attempts=attempts, dead_at=when, last_error=error[:2000], call_id=call_id))) == 1

    def dead_letters(self, tenant: str, limit: int = 100, before_id: int | None = None) -> list[DeadLetter]:
        """The tenant's dead letters, newest first (`before_id` pages on)."""
        query = (select(OutboxRow, Call.guid).join(Call, Call.call_id == OutboxRow.call_id)
                 .where(OutboxRow.dead_at.is_not(None), Call.tenant == tenant))
        if before_id is not None:
            query = query.where(OutboxRow.id < before_id)
        with self.db.sessions() as s:
            rows = s.execute(query.order_by(OutboxRow.id.desc()).limit(limit)).all()
            return [DeadLetter(r.id, r.msg_id, r.call_id, guid, r.payload, r.attempts, r.last_error, r.created_at,
                               r.dead_at) for r, guid in rows]

    def replay(self, tenant: str, row_id: int, when: datetime) -> bool:
        """Make one of the tenant's dead letters pending and due now, with a fresh retry budget.

        It becomes the head of its key again (the oldest pending id), so it goes before any later
        row of its leg still waiting; its age budget counts from now (`created_at` is reset).
        False when the tenant has no such dead letter."""
        mine = select(Call.call_id).where(Call.tenant == tenant).scalar_subquery()
        with self.db.sessions.begin() as s:
            return affected(s.execute(update(OutboxRow)
                             .where(OutboxRow.id == row_id, OutboxRow.dead_at.is_not(None),
                                    OutboxRow.call_id.in_(mine))
                             .values(dead_at=None, attempts=0, next_attempt_at=when, created_at=when,
                                     last_error=None))) == 1

    def mark_delivered(self, row_id: int, attempts: int, when: datetime, *, lease: datetime | None = None) -> bool:
        with self.db.sessions.begin() as s:
            return affected(s.execute(update(OutboxRow).where(OutboxRow.id == row_id, *_fence(lease))
                                      .values(delivered_at=when, attempts=attempts, last_error=None))) == 1

    def mark_failed(self, row_id: int, attempts: int, next_attempt_at: datetime, error: str, *,
                    lease: datetime | None = None) -> bool:
        with self.db.sessions.begin() as s:
            return affected(s.execute(update(OutboxRow).where(OutboxRow.id == row_id, *_fence(lease))
                      .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:2000]))) == 1

    def resume_all(self, when: datetime) -> int:
        """Make every pending row due now (at start: a restart is a good moment to try again)."""
        with self.db.sessions.begin() as s:
            return affected(s.execute(update(OutboxRow).where(*_PENDING, OutboxRow.next_attempt_at > when)
                             .values(next_attempt_at=when)))

    def purge_delivered(self, before: datetime) -> int:
        """Forget rows delivered before `before` (the utterances themselves stay in their table)."""
        with self.db.sessions.begin() as s:
            return affected(s.execute(delete(OutboxRow).where(OutboxRow.delivered_at.is_not(None),
                                                     OutboxRow.delivered_at < before)))


def _fence(lease: datetime | None) -> list[Any]:
    """The row is still under the lease this dispatcher claimed (no other node took it after it ran
    out: that node's claim set another next_attempt_at), and still pending."""
    return [] if lease is None else [OutboxRow.next_attempt_at == lease, *_PENDING]
