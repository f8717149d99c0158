"""Webhook delivery shared by every node: each node's dispatcher claims due rows from the one
PostgreSQL outbox (FOR UPDATE SKIP LOCKED, with a lease), so a row is sent by one node at a time,
one leg's rows still in order, and rows of a node that died are sent by the others once their
lease (if any) runs out. Rows stored by other nodes are found by polling every second.

A send is cut off at half the lease, and its outcome is recorded only while the row is still
under this node's lease (fenced on the claimed next_attempt_at): after a lease ran out another
node may have claimed and sent the row, and a late outcome here must not overwrite its."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from callscribe.delivery.outbox import WebhookDispatcher, _now
from callscribe.store import OutboxJob

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)  # longer than one attempt (10 s timeout) with room to record it
POLL_S = 1.0


class ClaimingDispatcher(WebhookDispatcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy.poll_s = min(self.policy.poll_s, POLL_S)
        self._claimed: dict[str, OutboxJob] = {}  # ordering key -> row being sent

    async def start(self) -> None:
        # Unlike one node, no resume_all at start: rows leased by other nodes are theirs to finish.
        import httpx

        from callscribe import __version__

        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False,
                                         headers={"user-agent": f"callscribe/{__version__}"})
        self._task = asyncio.create_task(self._run(), name="callscribe-webhooks")

    async def stop(self) -> None:
        """Stop, handing back the rows this node was sending, so the others need not wait out the lease."""
        claimed = list(self._claimed.values())
        await super().stop()
        try:
            await self.store.db.write(partial(self.store.outbox.make_due, leases=[j.next_attempt_at for j in claimed]),
                                      [j.id for j in claimed], _now())
        except Exception as exc:  # their lease runs out instead
            log.warning("webhook outbox: could not hand back %d row(s): %s", len(claimed), exc)

    async def _deliver(self, job: OutboxJob) -> None:
        self._claimed[job.ordering_key] = job
        try:
            await super()._deliver(job)
        finally:
            self._claimed.pop(job.ordering_key, None)

    def _lease(self, job: OutboxJob) -> datetime | None:
        return job.next_attempt_at  # a claimed job's is its lease (claim_due)

    async def _post(self, job: OutboxJob) -> tuple[int | None, str | None, float | None]:
        limit_s = LEASE.total_seconds() / 2
        try:
            async with asyncio.timeout(limit_s):
                return await super()._post(job)
        except TimeoutError:
            self.metrics.webhook_attempts.labels(outcome="network_error").inc()
            return None, f"no answer within {limit_s:.0f} s", None

    async def _dispatch_due(self) -> float:
        room = self.concurrency - len(self._inflight)
        if room > 0:
            now = _now()
            jobs = await self.store.db.write(self.store.outbox.claim_due, now, now + LEASE, room)
            for job in jobs:
                if job.ordering_key not in self._inflight:
                    self._inflight[job.ordering_key] = asyncio.create_task(self._deliver(job))
        self.metrics.webhook_backlog.set(await self.store.db.read(self.store.outbox.pending_count))
        self.metrics.webhook_dead.set(await self.store.db.read(self.store.outbox.dead_count))
        if time.monotonic() - self._last_purge > 3600:  # every node may purge; it is idempotent
            self._last_purge = time.monotonic()
            await self.store.db.write(self.store.outbox.purge_delivered, _now() - self.policy.keep_delivered)
        return self.policy.poll_s
