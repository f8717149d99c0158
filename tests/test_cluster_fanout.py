"""ClusterFanout against a real redis-server (one node object, a SQLite store, no serve processes)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from callscribe.calls.events import CallRef, CallStateEvent, EventBus
from callscribe.cluster import wire
from callscribe.cluster.fanout import ClusterFanout
from callscribe.cluster.node import ClusterNode, events_channel
from callscribe.config import load_settings
from callscribe.store import Store
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here


def event(call_id: str, seq: int) -> CallStateEvent:
    return CallStateEvent(CallRef(call_id, "acme", "twilio", "g-" + call_id), seq, "media-connected", {},
                          datetime.now(timezone.utc))


def test_events_of_a_call_not_held_here_come_from_redis_even_before_its_directory_entry(tmp_path, redis_url):
    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=PG, node_id="watcher")

    async def run() -> None:
        store = Store(f"sqlite:///{tmp_path / 'calls.db'}")
        await store.start()
        node = ClusterNode(settings)
        hub = ClusterFanout(EventBus(), node)
        hub.start()
        held: list[tuple[str, str, str, str, bool]] = []
        node.held_calls = lambda: held

        async def flush() -> None:
            pass

        async def published(call_id: str, seq: int) -> None:  # as the owning node publishes
            await node.redis.publish(events_channel(call_id), json.dumps(wire.event_json(event(call_id, seq))))

        try:
            # No directory entry for c-late yet (its node has not registered it): still live events.
            late, backlog = await hub.subscribe_with_backlog(store, flush, "c-late", 0)
            assert backlog == []
            await published("c-late", 1)
            assert [e.seq for e in await asyncio.wait_for(late.next_batch(), 10)] == [1]

            # A call held here is served locally; that subscriber leaving must not end the Redis
            # listening of another subscriber of the same call id.
            remote, _ = await hub.subscribe_with_backlog(store, flush, "c-both", 0)
            held.append(("acme", "twilio", "g-c-both", "c-both", True))
            local, _ = await hub.subscribe_with_backlog(store, flush, "c-both", 0)
            hub.unsubscribe(local)
            await asyncio.sleep(0.2)  # an unsubscribe from Redis, had one been started, is done by now
            await published("c-both", 1)
            assert [e.seq for e in await asyncio.wait_for(remote.next_batch(), 10)] == [1]
            hub.unsubscribe(remote)
            hub.unsubscribe(late)
        finally:
            hub.stop()
            await node.redis.aclose()
            store.close()

    asyncio.run(run())
