"""One ClusterNode against a real redis-server (no database, no serve processes)."""

from __future__ import annotations

import asyncio

from callscribe.calls.events import EventBus
from callscribe.cluster.node import P, ClusterNode
from callscribe.config import load_settings
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here


def test_a_stuck_periodic_task_does_not_stop_the_heartbeat(tmp_path, redis_url):
    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=PG,
                             node_id="beats", cluster_ttl_s=2, public_url="http://127.0.0.1:1")

    async def run() -> None:
        node = ClusterNode(settings)
        stuck = asyncio.Event()

        async def slow_database() -> None:  # a reaper tick queued behind a database that never answers
            stuck.set()
            await asyncio.Event().wait()

        node.on_tick.append(slow_database)
        await node.start(EventBus())
        try:
            await asyncio.wait_for(stuck.wait(), 10)
            await asyncio.sleep(settings.cluster_ttl_s * 1.5)  # past the TTL of the entry start() put
            assert await node.redis.exists(P + "node:beats") == 1
        finally:
            await node.stop()

    asyncio.run(run())
