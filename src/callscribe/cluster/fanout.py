"""Events of calls on other nodes for this node's WebSocket subscribers.

A subscriber to a call whose media is elsewhere is served from Redis: this node subscribes to the
call's events channel (published by the owning node, see node.py) and feeds what arrives to the
local hub, so the WebSocket route works unchanged. The backlog is read after the channel is
subscribed: the owner first stores what it has published (its persister's flush) and sends its ring
of recent events (partials included); the rest comes from PostgreSQL. Live and backlog overlap on
purpose; the route skips seqs already sent, so there is no gap and no duplicate.

Pub/sub is at most once: what is published while this node's subscription is down (Redis restarted,
the connection dropped) is lost for it. Such a gap is noticed (a call's seqs are consecutive, so a
jump shows one; a channel confirmed subscribed again means a reconnect) and the Redis-served
subscribers of that call are cut after what they got, told to reconnect with since= their last seq:
the backlog of the new subscription fills the gap from the owner and PostgreSQL.

A gap at the very end shows no jump (no event comes after it): at each cluster tick this node asks
PostgreSQL which of the calls it relays have ended; one found ended at two ticks in a row whose end
never came from Redis has its subscribers cut the same way (their reconnect reads the end stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis

from callscribe.calls.events import CallEvent, EventBus, is_end
from callscribe.cluster import wire
from callscribe.cluster.node import ClusterNode, RemoteError, events_channel
from callscribe.delivery.fanout import EventsUnavailable, FanoutHub, Subscription
from callscribe.store import Store

log = logging.getLogger(__name__)


class ClusterFanout(FanoutHub):
    def __init__(self, bus: EventBus, node: ClusterNode, **kwargs: Any) -> None:
        super().__init__(bus, **kwargs)
        self.node = node
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: dict[str, int] = {}  # call id -> local subscribers served from Redis
        self._listeners: set[Subscription] = set()  # those subscribers
        self._confirmed: dict[str, asyncio.Event] = {}
        self._last_seq: dict[str, int] = {}  # call id -> highest seq received from Redis
        self._dropping: set[asyncio.Task[None]] = set()
        node.handlers["recent"] = self._serve_recent
        node.on_tick.append(self.check_ends)
        self._store: Store | None = None  # the one subscribers read their backlog from
        self._ends_heard: set[str] = set()  # relayed calls whose end came from Redis
        self._ended_once: set[str] = set()  # relayed calls found ended in PostgreSQL at the last tick
        self.flush: Callable[[], Awaitable[None]] | None = None  # the persister's, set by the app

    def start(self) -> None:
        super().start()
        self._pubsub = self.node.redis.pubsub()
        self._reader = asyncio.create_task(self._read(), name="cluster-fanout")

    def stop(self) -> None:
        super().stop()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        while True:
            try:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.1)
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: events channel failed: %s", exc)
                for call_id in list(self._channels):  # what is published until it is back is lost
                    self._gap(call_id, "events lost (Redis connection dropped)")
                    if call_id in self._confirmed:  # new subscribers wait for the subscription again
                        self._confirmed[call_id].clear()
                await asyncio.sleep(1.0)
                continue
            if message is None:
                continue
            call_id = str(message.get("channel", "")).rpartition(":")[2]
            if message.get("type") == "subscribe":
                confirmed = self._confirmed.setdefault(call_id, asyncio.Event())
                if confirmed.is_set():  # subscribed again by the client's reconnect: a gap behind it
                    self._gap(call_id, "events lost (Redis reconnected)")
                confirmed.set()
            elif message.get("type") == "message":
                try:
                    event = wire.event_from(json.loads(message["data"]))
                except Exception:
                    log.exception("cluster: unreadable event on %s", message.get("channel"))
                    continue
                if is_end(event):
                    self._ends_heard.add(call_id)
                last = self._last_seq.get(call_id)
                if last is not None and event.seq > last + 1:
                    self._gap(call_id, f"events {last + 1} to {event.seq - 1} lost")
                self._last_seq[call_id] = max(event.seq, last or 0)
                self._on_event(event)

    def _gap(self, call_id: str, reason: str) -> None:
        """Cut the Redis-served subscribers of a call after what they got (see the module doc)."""
        self._last_seq.pop(call_id, None)
        cut = [sub for sub in list(self._subs.get(call_id, ())) if sub in self._listeners]
        for sub in cut:
            sub.cut(reason)
        if cut:
            log.warning("cluster: call %s: %s; %d events subscriber(s) told to reconnect", call_id, reason, len(cut))

    async def check_ends(self) -> None:
        """Cut the subscribers of a relayed call that ended without its end reaching this node (the
        owner's publish failed, or its queue was full): see the module doc."""
        store = self._store
        relayed = [c for c in self._channels if c not in self._ends_heard]
        if store is None or not relayed:
            self._ended_once.clear()
            return
        ended = await store.db.read(store.calls.ended_among, relayed)
        for call_id in ended & self._ended_once:
            if call_id in self._channels and call_id not in self._ends_heard:
                self._gap(call_id, "the call ended; its last events were lost")
        self._ended_once = set(ended)

    async def subscribe_with_backlog(self, store: Store, flush: Callable[[], Awaitable[None]], call_id: str,
                                     since: int) -> tuple[Subscription, list[CallEvent]]:
        self._store = store
        if self._held_here(call_id):  # the single-node path
            from callscribe.delivery.fanout import local_subscribe_with_backlog

            return await local_subscribe_with_backlog(self, store, flush, call_id, since)
        # Not held here: listen on Redis even when the directory names no owner (its entry may be
        # late, or the call may come back on another node); the backlog comes from the owner, if
        # any, and PostgreSQL.
        sub = self.subscribe(call_id)
        try:
            try:
                await self._listen_to(sub)
            except (TimeoutError, aioredis.RedisError) as exc:  # Redis away: the client comes back later
                raise EventsUnavailable(f"events unavailable ({type(exc).__name__})") from None
            owner = await self.node.owner_of_call(call_id)
            recent: list[CallEvent] = []
            if owner is not None and owner != self.node.id:
                try:
                    recent = [wire.event_from(e) for e in await self.node.call(
                        owner, "recent", {"call_id": call_id, "since": since}, timeout_s=30.0)]
                except RemoteError:
                    pass  # the owner is gone: what it stored is all there is
            else:
                await flush()  # a call of this node that ended a moment ago: its events stored
            stored = await store.db.read(store.calls.events_since, call_id, since)
        except BaseException:
            self.unsubscribe(sub)
            raise
        merged = {e.seq: e for e in stored}
        for event in recent + self.recent(call_id, since):
            merged.setdefault(event.seq, event)
        return sub, [merged[seq] for seq in sorted(merged)]

    def _held_here(self, call_id: str) -> bool:
        return any(c == call_id for (_t, _n, _g, c, _live) in self.node.held_calls())

    async def _listen_to(self, sub: Subscription) -> None:
        call_id = sub.call_id
        self._listeners.add(sub)  # only these lower the count again (unsubscribe)
        count = self._channels.get(call_id, 0)
        self._channels[call_id] = count + 1
        if count == 0:
            # A fresh flag: a confirmation arriving for a flag already set means a reconnect.
            event = self._confirmed[call_id] = asyncio.Event()
            await self._pubsub.subscribe(events_channel(call_id))
        else:
            event = self._confirmed.setdefault(call_id, asyncio.Event())
        async with asyncio.timeout(10):  # the channel live (again, after a dropped connection)
            await event.wait()

    def unsubscribe(self, sub: Subscription) -> None:
        super().unsubscribe(sub)
        if sub not in self._listeners:  # a local-path subscriber: no Redis listener of its own
            return
        self._listeners.discard(sub)
        count = self._channels.get(sub.call_id)
        if count is None:
            return
        if count > 1:
            self._channels[sub.call_id] = count - 1
            return
        del self._channels[sub.call_id]
        if self._pubsub is not None:
            task = asyncio.get_running_loop().create_task(self._drop(sub.call_id))
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)

    async def _drop(self, call_id: str) -> None:
        if self._channels.get(call_id):  # a new subscriber came meanwhile: keep listening
            return
        self._confirmed.pop(call_id, None)
        self._last_seq.pop(call_id, None)
        self._ends_heard.discard(call_id)
        try:
            await self._pubsub.unsubscribe(events_channel(call_id))
        except Exception as exc:
            log.warning("cluster: could not leave the events of call %s: %s", call_id, exc)

    async def _serve_recent(self, args: dict[str, Any]) -> Any:
        if self.flush is not None:
            await self.flush()  # everything published so far is in PostgreSQL before the peer reads it
        return [wire.event_json(e) for e in self.recent(str(args["call_id"]), int(args.get("since") or 0))]
