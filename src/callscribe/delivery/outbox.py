"""The webhook dispatcher: delivers outbox rows to CALLSCRIBE_WEBHOOK_URL until the receiver answers 2xx.

- In order per leg: only the oldest undelivered row of an ordering key (call + leg) is ever sent, and
  one key has at most one request in flight. Other keys are not held up by a failing one.
- Retried with exponential backoff and full jitter (1 s doubling to 60 s by default). A `Retry-After`
  is honoured.
- Dead letters: a 4xx other than 408/429 (the receiver refuses this body; retrying would not help),
  or a row past its retry budget (CALLSCRIBE_WEBHOOK_MAX_ATTEMPTS attempts or
  CALLSCRIBE_WEBHOOK_MAX_AGE_S since it was made), is set aside as dead: logged, counted in
  `callscribe_webhook_dead_letters_total`, and the next row of its key goes on. Dead letters are
  listed and replayed through the native API (`callscribe.api.deliveries`).
- Durable: rows are in the database; at start every pending row is made due at once, so a restart
  resumes delivery. Delivery is at least once: a crash between the receiver's 2xx and our record of
  it resends the row, with the same `webhook-id` for the receiver to de-duplicate.
- No database transaction is held across an HTTP request: read the due rows, send, record.
- One dispatcher per database: two callscribe processes sharing one database would both send.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial

import httpx

from callscribe import __version__
from callscribe.config import Settings
from callscribe.delivery.webhook import Signer
from callscribe.metrics import Metrics
from callscribe.store import OutboxJob, Store

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 60.0
    poll_s: float = 5.0  # longest sleep between looks at the table (rows added by other means)
    keep_delivered: timedelta = timedelta(days=7)
    max_attempts: int = 100
    max_age: timedelta = timedelta(days=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetryPolicy":
        return cls(max_attempts=settings.webhook_max_attempts, max_age=timedelta(seconds=settings.webhook_max_age_s))

    def delay(self, attempts: int) -> float:
        """Exponential, capped, with jitter over the upper half so many legs do not retry in lockstep."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(attempts - 1, 0)))
        return random.uniform(ceiling / 2, ceiling)

    def exhausted(self, job: OutboxJob, attempts: int, now: datetime) -> bool:
        """The retry budget is spent: no further attempt after this one."""
        return attempts >= self.max_attempts or now - job.created_at >= self.max_age


def refused(status: int | None) -> bool:
    """A 4xx other than 408 (timeout) and 429 (slow down): the receiver will not take this body."""
    return status is not None and 400 <= status < 500 and status not in (408, 429)


def call_id_of(job: OutboxJob) -> str | None:
    """The call a row belongs to: ordering keys are `<call_id>:<leg>`."""
    call_id, sep, _ = job.ordering_key.partition(":")
    return call_id if sep and call_id else None


class WebhookDispatcher:
    def __init__(self, store: Store, url: str, signer: Signer, metrics: Metrics, *,
                 policy: RetryPolicy | None = None, concurrency: int = 16, timeout_s: float = 10.0) -> None:
        self.store = store
        self.url = url
        self.signer = signer
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self._timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task] = {}
        # Deliveries finish while the table is being read; a key whose delivery finished after the
        # read began is skipped in that pass (its row as read is stale), or it would be sent twice.
        self._finished = 0
        self._finished_at: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self._last_purge = 0.0

    async def start(self) -> None:
        resumed = await self.store.db.write(self.store.outbox.resume_all, _now())
        if resumed:
            log.info("webhook outbox: %d pending deliveries resumed", resumed)
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False,
                                         headers={"user-agent": f"callscribe/{__version__}"})
        self._task = asyncio.create_task(self._run(), name="callscribe-webhooks")

    def wake(self) -> None:
        """New rows are waiting (the persister calls this after each commit)."""
        self._wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                timeout = await self._dispatch_due()
            except Exception as exc:  # the database is unavailable: look again later
                log.warning("webhook outbox unreadable: %s", exc)
                timeout = self.policy.poll_s
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _dispatch_due(self) -> float:
        """Start a delivery for every due head not already in flight; seconds until the next is due."""
        read_at = self._finished
        heads = await self.store.db.read(self.store.outbox.heads)
        self.metrics.webhook_backlog.set(await self.store.db.read(self.store.outbox.pending_count))
        self.metrics.webhook_dead.set(await self.store.db.read(self.store.outbox.dead_count))
        now = _now()
        wait = self.policy.poll_s
        for job in heads:
            if job.ordering_key in self._inflight or self._finished_at.get(job.ordering_key, 0) > read_at:
                continue
            if job.next_attempt_at > now:
                wait = min(wait, (job.next_attempt_at - now).total_seconds())
            elif len(self._inflight) < self.concurrency:
                self._inflight[job.ordering_key] = asyncio.create_task(self._deliver(job))
        self._finished_at = {k: n for k, n in self._finished_at.items() if n > read_at}
        if time.monotonic() - self._last_purge > 3600:
            self._last_purge = time.monotonic()
            await self.store.db.write(self.store.outbox.purge_delivered, now - self.policy.keep_delivered)
        return max(wait, 0.0)

    async def _deliver(self, job: OutboxJob) -> None:
        attempts = job.attempts + 1
        try:
            status, error, retry_after = await self._post(job)
            if error is None:
                await self.store.db.write(partial(self.store.outbox.mark_delivered, lease=self._lease(job)),
                                          job.id, attempts, _now())
                return
            now = _now()
            reason = "refused" if refused(status) else "budget" if self.policy.exhausted(job, attempts, now) else None
            if reason is not None:
                log.error("webhook %s is a dead letter after %d attempt(s) (%s: %s); later rows of %s go on",
                          job.msg_id, attempts, reason, error, job.ordering_key)
                await self.store.db.write(partial(self.store.outbox.mark_dead, lease=self._lease(job)),
                                          job.id, attempts, now, error, call_id_of(job))
                self.metrics.webhook_dead_letters.labels(reason=reason).inc()
                return
            delay = self.policy.delay(attempts)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.policy.cap_s * 10))
            log.warning("webhook %s attempt %d failed (%s); next try in %.1f s", job.msg_id, attempts, error, delay)
            await self.store.db.write(partial(self.store.outbox.mark_failed, lease=self._lease(job)), job.id, attempts,
                                      now + timedelta(seconds=delay), error)
        except asyncio.CancelledError:
            raise
        except Exception:  # recording the outcome failed; the row stays pending and is tried again
            log.exception("webhook %s: could not record the outcome", job.msg_id)
        finally:
            self._inflight.pop(job.ordering_key, None)
            self._finished += 1
            self._finished_at[job.ordering_key] = self._finished
            self.wake()

    def _lease(self, job: OutboxJob) -> datetime | None:
        """The claim an outcome is recorded under (cluster: the lease); None on one node."""
        return None

    async def _post(self, job: OutboxJob) -> tuple[int | None, str | None, float | None]:
        """(status, None, None) on a 2xx, else (status or None, what went wrong, Retry-After seconds)."""
        assert self._client is not None
        headers = {"content-type": "application/json", **self.signer.headers(job.msg_id, job.payload)}
        try:
            resp = await self._client.post(self.url, content=job.payload.encode(), headers=headers)
        except httpx.HTTPError as exc:
            self.metrics.webhook_attempts.labels(outcome="network_error").inc()
            return None, f"{type(exc).__name__}: {exc}", None
        if 200 <= resp.status_code < 300:
            self.metrics.webhook_attempts.labels(outcome="delivered").inc()
            return resp.status_code, None, None
        self.metrics.webhook_attempts.labels(outcome=f"http_{resp.status_code // 100}xx").inc()
        return resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200]}", _retry_after(resp)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
