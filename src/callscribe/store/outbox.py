"""The webhook outbox table: which rows are due, and recording each attempt's outcome.

Rows of one ordering key are delivered one at a time in id order, so only the oldest undelivered
row of each key (its "head") is ever a candidate. Every method is one short transaction; the
dispatcher never holds one across an HTTP request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from callscribe.store.db import Database
from callscribe.store.models import OutboxRow


@dataclass(frozen=True)
class OutboxJob:
    id: int
    msg_id: str
    ordering_key: str
    payload: str
    attempts: int
    next_attempt_at: datetime


class OutboxRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def heads(self) -> list[OutboxJob]:
        """The oldest undelivered row of every ordering key, due or not."""
        oldest = (select(func.min(OutboxRow.id).label("id"))
                  .where(OutboxRow.delivered_at.is_(None))
                  .group_by(OutboxRow.ordering_key).subquery())
        with self.db.sessions() as s:
            rows = s.scalars(select(OutboxRow).join(oldest, OutboxRow.id == oldest.c.id)
                             .order_by(OutboxRow.next_attempt_at, OutboxRow.id)).all()
            return [OutboxJob(r.id, r.msg_id, r.ordering_key, r.payload, r.attempts, r.next_attempt_at)
                    for r in rows]

    def pending_count(self) -> int:
        with self.db.sessions() as s:
            return s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.delivered_at.is_(None))) or 0

    def mark_delivered(self, row_id: int, attempts: int, when: datetime) -> None:
        with self.db.sessions.begin() as s:
            s.execute(update(OutboxRow).where(OutboxRow.id == row_id)
                      .values(delivered_at=when, attempts=attempts, last_error=None))

    def mark_failed(self, row_id: int, attempts: int, next_attempt_at: datetime, error: str) -> None:
        with self.db.sessions.begin() as s:
            s.execute(update(OutboxRow).where(OutboxRow.id == row_id)
                      .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:2000]))

    def resume_all(self, when: datetime) -> int:
        """Make every undelivered row due now (at start: a restart is a good moment to try again)."""
        with self.db.sessions.begin() as s:
            return s.execute(update(OutboxRow).where(OutboxRow.delivered_at.is_(None),
                                                     OutboxRow.next_attempt_at > when)
                             .values(next_attempt_at=when)).rowcount

    def purge_delivered(self, before: datetime) -> int:
        """Forget rows delivered before `before` (the utterances themselves stay in their table)."""
        with self.db.sessions.begin() as s:
            return s.execute(delete(OutboxRow).where(OutboxRow.delivered_at.is_not(None),
                                                     OutboxRow.delivered_at < before)).rowcount
