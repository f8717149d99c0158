"""ClusterFanout against a real redis-server (one node object, a SQLite store, no serve processes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone

from callscribe.calls.events import CallRef, CallStateEvent, EventBus
from callscribe.cluster import wire
from callscribe.cluster.fanout import ClusterFanout
from callscribe.cluster.node import ClusterNode, events_channel
from callscribe.config import load_settings
from callscribe.store import Store
from cluster_helpers import pg_url, redis_server, redis_url  # noqa: F401 (fixtures)

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here


def event(call_id: str, seq: int) -> CallStateEvent:
    return CallStateEvent(CallRef(call_id, "acme", "twilio", "g-" + call_id), seq, "media-connected", {},
                          datetime.now(timezone.utc))


async def flush() -> None:
    pass


async def published(node: ClusterNode, call_id: str, seq: int) -> None:  # as the owning node publishes
    await node.redis.publish(events_channel(call_id), json.dumps(wire.event_json(event(call_id, seq))))


@contextlib.asynccontextmanager
async def relay(tmp_path, redis_url: str, store_url: str | None = None) -> AsyncIterator[tuple[ClusterFanout, ClusterNode, Store]]:
    """A node that relays calls held elsewhere: its fan-out hub, the node and a store."""
    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=PG, node_id="watcher",
                             public_url="http://127.0.0.1:1")
    store = Store(store_url or f"sqlite:///{tmp_path / 'calls.db'}")
    await store.start()
    node = ClusterNode(settings)
    hub = ClusterFanout(EventBus(), node)
    hub.start()
    try:
        yield hub, node, store
    finally:
        hub.stop()
        await node.redis.aclose()
        store.close()


def test_events_of_a_call_not_held_here_come_from_redis_even_before_its_directory_entry(tmp_path, redis_url):
    async def run() -> None:
        async with relay(tmp_path, redis_url) as (hub, node, store):
            held: list[tuple[str, str, str, str, bool]] = []
            node.held_calls = lambda: held
            # No directory entry for c-late yet (its node has not registered it): still live events.
            late, backlog = await hub.subscribe_with_backlog(store, flush, "c-late", 0)
            assert backlog == []
            await published(node, "c-late", 1)
            assert [e.seq for e in await asyncio.wait_for(late.next_batch(), 10)] == [1]

            # A call held here is served locally; that subscriber leaving must not end the Redis
            # listening of another subscriber of the same call id.
            remote, _ = await hub.subscribe_with_backlog(store, flush, "c-both", 0)
            held.append(("acme", "twilio", "g-c-both", "c-both", True))
            local, _ = await hub.subscribe_with_backlog(store, flush, "c-both", 0)
            hub.unsubscribe(local)
            await asyncio.sleep(0.2)  # an unsubscribe from Redis, had one been started, is done by now
            await published(node, "c-both", 1)
            assert [e.seq for e in await asyncio.wait_for(remote.next_batch(), 10)] == [1]
            hub.unsubscribe(remote)
            hub.unsubscribe(late)

    asyncio.run(run())


def test_events_lost_on_redis_are_noticed_and_the_subscriber_told_to_reconnect(tmp_path, redis_url):
    """Pub/sub drops what is published while a subscriber is away: a jump in a call's seqs, or the
    client's reconnect to Redis, cuts that call's Redis-served subscribers after what they got
    (the route then closes saying `reconnect with since=N`)."""
    import pytest
    import redis

    from callscribe.delivery.fanout import SubscriberOverflow

    async def drained(sub) -> list[int]:
        """Seqs delivered until the subscription is cut (hang guard only)."""
        seqs: list[int] = []
        with pytest.raises(SubscriberOverflow):
            while True:
                seqs += [e.seq for e in await asyncio.wait_for(sub.next_batch(), 30)]
        return seqs

    async def run() -> None:
        async with relay(tmp_path, redis_url) as (hub, node, store):
            # A jump: 3 never arrived.
            jump, _ = await hub.subscribe_with_backlog(store, flush, "c-jump", 0)
            for seq in (1, 2, 4, 5):
                await published(node, "c-jump", seq)
            assert await drained(jump) == [1, 2]
            assert jump.reason == "events 3 to 3 lost"

            # A reconnect: the subscription connection is killed; redis-py connects and subscribes
            # again, and whatever was published meanwhile is gone.
            dropped, _ = await hub.subscribe_with_backlog(store, flush, "c-drop", 0)
            await published(node, "c-drop", 1)
            assert [e.seq for e in await asyncio.wait_for(dropped.next_batch(), 30)] == [1]
            admin = redis.Redis.from_url(redis_url)
            try:
                assert admin.client_kill_filter(_type="pubsub") >= 1
            finally:
                admin.close()
            assert await drained(dropped) == []
            assert "lost" in dropped.reason

            # A new subscriber after the reconnect is served as usual.
            again, _ = await hub.subscribe_with_backlog(store, flush, "c-drop", 1)
            hub.unsubscribe(dropped)
            await published(node, "c-drop", 2)
            assert [e.seq for e in await asyncio.wait_for(again.next_batch(), 30)] == [2]
            hub.unsubscribe(again)
            hub.unsubscribe(jump)

    asyncio.run(run())


def test_a_subscriber_arriving_while_redis_is_away_is_told_to_reconnect_later(tmp_path):
    """While Redis is down a new subscriber cannot be served from it: EventsUnavailable (the route
    closes 1013 saying `reconnect with since=N`), whether its call's channel was being listened to
    already (waiting for it to be confirmed again) or not (the subscribe itself fails)."""
    import pytest

    from callscribe.delivery.fanout import EventsUnavailable, SubscriberOverflow
    from cluster_helpers import RedisProcess

    server = RedisProcess().start()  # the test's own: it is stopped
    async def run() -> None:
        async with relay(tmp_path, server.url) as (hub, node, store):
            first, _ = await hub.subscribe_with_backlog(store, flush, "c-on", 0)
            server.stop()
            with pytest.raises(SubscriberOverflow):  # cut once the reader sees the drop
                await asyncio.wait_for(first.next_batch(), 60)
            with pytest.raises(EventsUnavailable):
                await hub.subscribe_with_backlog(store, flush, "c-on", 3)
            with pytest.raises(EventsUnavailable):
                await hub.subscribe_with_backlog(store, flush, "c-new", 0)
            hub.unsubscribe(first)

    try:
        asyncio.run(run())
    finally:
        server.close()


def test_a_relayed_call_whose_end_never_came_from_redis_is_cut_once_it_is_stored_ended(tmp_path, redis_url, pg_url):
    """The owner's last events (its end) lost on the way to Redis show no jump: the relaying node
    finds the call ended in PostgreSQL (at two checks in a row) and tells its subscribers to
    reconnect, whose backlog then ends with the end stored."""
    import pytest

    from callscribe.delivery.fanout import SubscriberOverflow

    async def run() -> None:
        async with relay(tmp_path, redis_url, pg_url) as (hub, node, store):
            connected = event("c-quiet", 1)
            ended = CallStateEvent(connected.call, 2, "media-ended", {"reason": "hangup"}, datetime.now(timezone.utc))
            heard = event("c-heard", 1)
            heard_end = CallStateEvent(heard.call, 2, "media-ended", {}, datetime.now(timezone.utc))
            await store.db.write(store.calls.save_events, [(connected, None), (heard, None)])
            quiet, _ = await hub.subscribe_with_backlog(store, flush, "c-quiet", 0)
            loud, _ = await hub.subscribe_with_backlog(store, flush, "c-heard", 0)
            for e in (connected, heard, heard_end):
                await node.redis.publish(events_channel(e.call.call_id), json.dumps(wire.event_json(e)))
            assert [e.seq for e in await asyncio.wait_for(quiet.next_batch(), 30)] == [1]
            got = []
            while len(got) < 2:
                got += [e.seq for e in await asyncio.wait_for(loud.next_batch(), 30)]
            # Both stored ended; only c-quiet's end was never published (the owner's publish failed).
            await store.db.write(store.calls.save_events, [(ended, None), (heard_end, None)])
            await hub.check_ends()  # first seen ended: its end may still be on its way
            assert not quiet.overflowed
            await hub.check_ends()
            with pytest.raises(SubscriberOverflow):
                await asyncio.wait_for(quiet.next_batch(), 30)
            assert "ended" in quiet.reason and not loud.overflowed
            hub.unsubscribe(quiet)
            again, backlog = await hub.subscribe_with_backlog(store, flush, "c-quiet", 1)
            assert [(e.seq, getattr(e, "state", None)) for e in backlog] == [(2, "media-ended")]
            hub.unsubscribe(again)
            hub.unsubscribe(loud)

    asyncio.run(run())
