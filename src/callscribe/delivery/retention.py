"""The retention sweep: every hour, calls older than CALLSCRIBE_RETENTION_DAYS lose their
transcripts, events, webhooks and recordings (ASAPP keeps seven days; 0 keeps everything).

Recording files go first, then the rows in one transaction per batch: a sweep cut short leaves rows
whose files are gone (the recording then answers 404), never files nobody can find, and the next
sweep finishes the job.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

from callscribe.metrics import Metrics
from callscribe.store import Store
from callscribe.store.retention import ExpiredCall, RetentionRepository

log = logging.getLogger(__name__)
_BATCH = 200


class RetentionSweeper:
    def __init__(self, store: Store, data_dir: Path, days: int, metrics: Metrics | None = None, *,
                 interval_s: float = 3600.0, first_after_s: float = 60.0) -> None:
        self.store = store
        self.repo = RetentionRepository(store.db)
        self.data_dir = Path(data_dir).resolve()
        self.keep = timedelta(days=days)
        self.metrics = metrics
        self.interval_s = interval_s
        self.first_after_s = first_after_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="callscribe-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        await asyncio.sleep(self.first_after_s)
        while True:
            try:
                await self.sweep()
            except Exception:  # the database is unavailable, say: the next sweep tries again
                log.exception("retention sweep failed")
            await asyncio.sleep(self.interval_s)

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete every call past the retention period (as of `now`); the number deleted."""
        before = (now or datetime.now(timezone.utc)) - self.keep
        deleted = 0
        while True:
            batch = await self.store.db.read(self.repo.expired, before, _BATCH)
            if not batch:
                break
            for call in batch:
                self._remove_files(call)
            deleted += await self.store.db.write(self.repo.delete_calls, [c.call_id for c in batch])
            if len(batch) < _BATCH:
                break
        if deleted:
            log.info("retention: deleted %d call(s) that ended before %s", deleted, before.isoformat())
            if self.metrics is not None:
                self.metrics.retention_deleted_calls.inc(deleted)
        return deleted

    def _remove_files(self, call: ExpiredCall) -> None:
        for rel in call.recording_paths:
            path = (self.data_dir / rel).resolve()
            if not path.is_relative_to(self.data_dir):
                continue  # a stored path never points outside the data dir; if it does, leave it
            try:
                path.unlink(missing_ok=True)
                path.parent.rmdir()  # the call's recordings directory, once empty
            except OSError:
                pass  # not empty yet (other legs), or already gone
