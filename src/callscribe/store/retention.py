"""Retention in the database: which calls are past the retention period, and deleting them with
every row kept about them (state events, stream intervals, utterances, recordings' rows, webhooks).

A call's age counts from its end (from its start while it never ended, as after a crash). Files are
the caller's business (`callscribe.delivery.retention` removes recordings before their rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import delete, func, or_, select

from callscribe.store.db import Database, affected
from callscribe.store.models import Call, CallEventRow, OutboxRow, Recording, StreamInterval, Utterance


@dataclass(frozen=True)
class ExpiredCall:
    call_id: str
    recording_paths: tuple[str, ...]  # relative to the data dir


class RetentionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def expired(self, before: datetime, limit: int = 200) -> list[ExpiredCall]:
        """Up to `limit` calls that ended (or, never ended, started) before `before`, oldest first."""
        age = func.coalesce(Call.ended_at, Call.created_at)
        with self.db.sessions() as s:
            ids = s.scalars(select(Call.call_id).where(age < before).order_by(age).limit(limit)).all()
            paths: dict[str, list[str]] = {call_id: [] for call_id in ids}
            if ids:
                for call_id, path in s.execute(select(Recording.call_id, Recording.path)
                                               .where(Recording.call_id.in_(ids))):
                    paths[call_id].append(path)
            return [ExpiredCall(call_id, tuple(p)) for call_id, p in paths.items()]

    def delete_calls(self, call_ids: Sequence[str]) -> int:
        """Delete the calls and everything kept about them, in one transaction; the number deleted."""
        if not call_ids:
            return 0
        # Outbox rows name their call by ordering key (`<call_id>:<leg>`); dead letters also by call_id.
        outbox = or_(OutboxRow.call_id.in_(call_ids),
                     *(OutboxRow.ordering_key.startswith(f"{call_id}:", autoescape=True) for call_id in call_ids))
        with self.db.sessions.begin() as s:
            s.execute(delete(OutboxRow).where(outbox))
            for child in (CallEventRow, StreamInterval, Utterance, Recording):
                s.execute(delete(child).where(child.call_id.in_(call_ids)))
            return affected(s.execute(delete(Call).where(Call.call_id.in_(call_ids))))
