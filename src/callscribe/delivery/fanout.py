"""WebSocket fan-out: every event of a call to each of its subscribers, with replay from `since`.

Each subscriber has a bounded buffer; one that falls behind is cut off (it is told to reconnect with
`since=` its last seq) instead of slowing the bus, the registry or other subscribers.

Replay: a subscriber first registers (so nothing published from then on is missed), then waits for
the persister to store everything already published, then reads the backlog: finals and state
events from the store, plus partials (and any other recent events) from a small in-memory ring per
live call. Live events already in the backlog are skipped by seq, so there is no gap and no
duplicate. Partials older than the ring (RING_SIZE events per call), or of a call that has ended,
are not replayed: partials are best effort, finals never are.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Awaitable, Callable

from callscribe.calls.events import CallEvent, CallStateEvent, EventBus
from callscribe.store import Store

RING_SIZE = 256
MAX_RINGS = 2000
QUEUE_SIZE = 1000


class SubscriberOverflow(Exception):
    """The subscriber fell more than QUEUE_SIZE events behind."""


class EventsUnavailable(Exception):
    """The call's events cannot be followed now (a cluster node's Redis is away): the client
    reconnects with `since=` its last seq."""


class Subscription:
    def __init__(self, call_id: str, maxsize: int) -> None:
        self.call_id = call_id
        self._events: deque[CallEvent] = deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self.overflowed = False
        self.reason = "too slow"  # why it ended early: what the consumer tells its client

    def cut(self, reason: str) -> None:
        """End the subscription after the events buffered so far (a gap in what comes next: the
        client must reconnect with since= its last seq)."""
        if not self.overflowed:
            self.overflowed, self.reason = True, reason
        self._ready.set()

    def push(self, event: CallEvent) -> None:
        if self.overflowed:
            return
        if len(self._events) >= self._maxsize:
            self.overflowed = True  # stop buffering; the consumer drains what it has, then is closed
        else:
            self._events.append(event)
        self._ready.set()

    async def next_batch(self) -> list[CallEvent]:
        """The events buffered so far (waiting for at least one); raises once overflowed and drained."""
        while not self._events:
            if self.overflowed:
                raise SubscriberOverflow
            self._ready.clear()
            await self._ready.wait()
        batch = list(self._events)
        self._events.clear()
        return batch


class FanoutHub:
    def __init__(self, bus: EventBus, *, ring_size: int = RING_SIZE, queue_size: int = QUEUE_SIZE) -> None:
        self.bus = bus
        self.ring_size = ring_size
        self.queue_size = queue_size
        self._rings: OrderedDict[str, deque[CallEvent]] = OrderedDict()
        self._subs: dict[str, set[Subscription]] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()

    def _on_event(self, event: CallEvent) -> None:
        call_id = event.call.call_id
        if isinstance(event, CallStateEvent) and event.state == "media-ended":
            self._rings.pop(call_id, None)  # finals and states of an ended call replay from the store
        else:
            ring = self._rings.get(call_id)
            if ring is None:
                ring = self._rings[call_id] = deque(maxlen=self.ring_size)
                while len(self._rings) > MAX_RINGS:
                    self._rings.popitem(last=False)
            ring.append(event)
        for sub in self._subs.get(call_id, ()):
            sub.push(event)

    def subscribe(self, call_id: str) -> Subscription:
        sub = Subscription(call_id, self.queue_size)
        self._subs.setdefault(call_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.call_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.call_id]

    def recent(self, call_id: str, since: int) -> list[CallEvent]:
        return [e for e in self._rings.get(call_id, ()) if e.seq > since]

    def subscriber_count(self, call_id: str) -> int:
        return len(self._subs.get(call_id, ()))


async def subscribe_with_backlog(hub: FanoutHub, store: Store, flush: Callable[[], Awaitable[None]],
                                 call_id: str, since: int) -> tuple[Subscription, list[CallEvent]]:
    """Register a subscriber, then collect every event with seq > since published before that.

    `flush` waits until the persister has stored everything published so far. A cluster node's hub
    (callscribe.cluster.fanout) brings the events of calls held by other nodes as well.
    """
    own = getattr(hub, "subscribe_with_backlog", None)
    if own is not None:
        result: tuple[Subscription, list[CallEvent]] = await own(store, flush, call_id, since)
        return result
    return await local_subscribe_with_backlog(hub, store, flush, call_id, since)


async def local_subscribe_with_backlog(hub: FanoutHub, store: Store, flush: Callable[[], Awaitable[None]],
                                       call_id: str, since: int) -> tuple[Subscription, list[CallEvent]]:
    """subscribe_with_backlog for the calls of this process."""
    sub = hub.subscribe(call_id)
    try:
        await flush()
        stored = await store.db.read(store.calls.events_since, call_id, since)
    except BaseException:
        hub.unsubscribe(sub)
        raise
    merged = {e.seq: e for e in stored}
    for event in hub.recent(call_id, since):
        merged.setdefault(event.seq, event)
    return sub, [merged[seq] for seq in sorted(merged)]
