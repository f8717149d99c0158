"""Persists call events from the bus: final utterances (with their webhook outbox row, in the same
transaction), state changes, stream intervals and summaries, recordings. Partials are not stored.

Events are written in publish order by the store's single writer thread, batched when they arrive
faster than the database commits. Storage refuses loudly, never silently:

- A database that is unreachable (or full: OperationalError) is retried until it answers; meanwhile
  `store_healthy` is False (/readyz answers 503) and `flush()` returns at once instead of waiting.
- A batch the database refuses is retried row by row, so one bad event does not sink its
  neighbours; a row that still cannot be stored is logged, counted in
  `callscribe_store_failures_total` and reported on its call (`store_failures(call_id)`).
- The queue is bounded (`_QUEUE_MAX` events, hours of finals at full load): past it, while the
  database is down for that long, new events are refused and reported the same way, rather than
  growing memory until the process dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping

from sqlalchemy.exc import InterfaceError, OperationalError

from callscribe.calls.events import CallEvent, EventBus, SettledEvent, UtteranceEvent
from callscribe.delivery.webhook import Formatter, WebhookMessage
from callscribe.metrics import Metrics
from callscribe.store import NewOutbox, Store

log = logging.getLogger(__name__)
_BATCH = 200
_RETRY_CAP_S = 10.0
_QUEUE_MAX = 100_000
_CALLS_REPORTED = 10_000  # calls whose failure counts are remembered (oldest forgotten first)


class _Barrier:
    """A marker in the queue: its future resolves once everything queued before it is stored."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Persister:
    def __init__(self, bus: EventBus, store: Store, *, webhooks_enabled: bool,
                 formatters: Mapping[str, Formatter] | None = None,
                 on_outbox: Callable[[], None] | None = None, metrics: Metrics | None = None) -> None:
        self.bus = bus
        self.store = store
        self.webhooks_enabled = webhooks_enabled
        self.formatters = dict(formatters or {})  # control surface -> its webhook formatter
        self._unformatted: set[str] = set()
        self.on_outbox = on_outbox  # wakes the webhook dispatcher
        self.metrics = metrics
        # Barriers and the stop marker always go in; events only up to _QUEUE_MAX (see _on_event).
        self._queue: asyncio.Queue[CallEvent | SettledEvent | _Barrier | None] = asyncio.Queue()
        self._queued_events = 0
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_progress: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None
        self.store_healthy = True
        self._unhealthy = asyncio.Event()  # set while the database is failing: releases flush() waiters
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._last_overflow_log = 0.0

    def store_failures(self, call_id: str) -> int:
        """Events of this call the store could not keep (refused rows, or refused for a full queue)."""
        return self._failures.get(call_id, 0)

    def _report_failure(self, event: CallEvent, reason: str) -> None:
        call_id = event.call.call_id
        self._failures[call_id] = self._failures.pop(call_id, 0) + 1
        while len(self._failures) > _CALLS_REPORTED:
            self._failures.popitem(last=False)
        if self.metrics is not None:
            self.metrics.store_failures.labels(reason=reason).inc()

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self.store_healthy:
            return
        self.store_healthy = healthy
        if healthy:
            self._unhealthy.clear()
            log.warning("database available again: storing resumes")
        else:
            self._unhealthy.set()
        if self.metrics is not None:
            self.metrics.store_healthy.set(1 if healthy else 0)

    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe(self._on_event)
        self._unsubscribe_progress = self.bus.subscribe_progress(self._on_progress)
        self._task = asyncio.create_task(self._run(), name="callscribe-persister")

    def _on_event(self, event: CallEvent) -> None:
        if isinstance(event, UtteranceEvent) and event.kind != "final":
            return
        if self._queued_events >= _QUEUE_MAX:
            self._report_failure(event, "queue_full")
            if time.monotonic() - self._last_overflow_log > 10:  # one line per 10 s, not per event
                self._last_overflow_log = time.monotonic()
                log.error("not stored: %d events wait for the database already; refusing %s seq %s of call %s",
                          self._queued_events, type(event).__name__, event.seq, event.call.call_id)
            return
        self._queued_events += 1
        self._queue.put_nowait(event)

    def _on_progress(self, event: SettledEvent) -> None:
        """A settled mark goes through the queue, after the finals before it, to the formatters
        (segment callbacks through a silence); it is stored only as the outbox rows they make.
        Dropped when the queue is full: a later mark says as much."""
        if self._queued_events < _QUEUE_MAX:
            self._queued_events += 1
            self._queue.put_nowait(event)

    async def flush(self) -> None:
        """Return once every event published before this call is stored, or at once while the
        database is failing (readers then see what is stored; they must not hang on an outage)."""
        if self._task is None or self._task.done() or not self.store_healthy:
            return
        barrier = _Barrier()
        self._queue.put_nowait(barrier)
        outage = asyncio.ensure_future(self._unhealthy.wait())
        waits: set[asyncio.Future[Any]] = {barrier.done, outage}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            outage.cancel()

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop listening, store what is queued (waiting at most `timeout` for the database), end."""
        if self._unsubscribe:
            self._unsubscribe()
        if self._unsubscribe_progress:
            self._unsubscribe_progress()
        if self._task is None or self._task.done():
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.error("database unavailable at shutdown: about %d event(s) not stored", self._queue.qsize())
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            batch: list[CallEvent | SettledEvent] = []
            barriers: list[_Barrier] = []
            stopping = False
            item = await self._queue.get()
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    self._queued_events -= 1
                    batch.append(item)
                if stopping or len(batch) >= _BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._save(batch)
            for barrier in barriers:
                if not barrier.done.done():
                    barrier.done.set_result(None)
            if stopping:
                return

    def _items(self, events: list[CallEvent | SettledEvent]) -> list[tuple[CallEvent | SettledEvent, list[NewOutbox]]]:
        items: list[tuple[CallEvent | SettledEvent, list[NewOutbox]]] = []
        for event in events:
            formatter = self.formatters.get(event.surface) if event.surface else None
            if self.webhooks_enabled and event.surface and formatter is None:
                if event.surface not in self._unformatted:
                    self._unformatted.add(event.surface)
                    log.error("no webhook format for surface %r: its webhooks are not sent", event.surface)
            made = formatter(event) if self.webhooks_enabled and formatter is not None else None
            messages = [made] if isinstance(made, WebhookMessage) else list(made or ())
            items.append((event, [NewOutbox(m.msg_id, m.ordering_key, m.payload) for m in messages]))
        return items

    async def _save(self, events: list[CallEvent | SettledEvent]) -> None:
        # A settled mark that made no callback has nothing to store.
        items = [(e, o) for e, o in self._items(events) if o or not isinstance(e, SettledEvent)]
        if not items:
            return
        if not await self._try_save(items) and len(items) > 1:
            # One bad event (a duplicate seq, say) must not sink its neighbours: save one by one.
            for item in items:
                await self._try_save([item])
        if self.on_outbox and any(outbox for _, outbox in items):
            self.on_outbox()

    async def _try_save(self, items: list[tuple[CallEvent | SettledEvent, list[NewOutbox]]]) -> bool:
        """Save in one transaction. An unreachable database is waited for; an event the database
        refuses (retrying would not help) is logged when alone and reported as False."""
        delay = 0.5
        while True:
            try:
                await self.store.db.write(self.store.calls.save_events, items)
                self._set_healthy(True)
                return True
            except (OperationalError, InterfaceError) as exc:
                self._set_healthy(False)
                log.warning("storing %d event(s) failed (%s); retrying in %.1f s", len(items), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP_S)
            except Exception:
                self._set_healthy(True)  # the database answered: it refuses this, it is not down
                if len(items) == 1:
                    event = items[0][0]
                    log.exception("not stored: %s seq %s of call %s", type(event).__name__,
                                  getattr(event, "seq", "-"), event.call.call_id)
                    if not isinstance(event, SettledEvent):
                        self._report_failure(event, "refused")
                return False
