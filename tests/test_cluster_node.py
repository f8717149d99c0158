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


def test_leaving_does_not_hang_on_a_redis_that_stopped_answering(tmp_path):
    """A Redis that holds the connection open and answers nothing (SIGSTOP'd here: as a blackholed
    host) must not hold up a node's exit; once it answers again, the node is not put back."""
    import os
    import signal

    from cluster_helpers import RedisProcess

    server = RedisProcess().start()  # the test's own: it is frozen
    settings = load_settings(data_dir=tmp_path, redis_url=server.url, database_url=PG,
                             node_id="frozen", cluster_ttl_s=2, public_url="http://127.0.0.1:1")

    async def run() -> None:
        node = ClusterNode(settings)
        await node.start(EventBus())
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.wait_for(node.stop(), 120)  # a hang guard, not a measurement
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        import redis.asyncio as aioredis

        admin = aioredis.Redis.from_url(server.url)
        try:
            await admin.delete(P + "node:frozen")  # whatever the frozen server still had queued
            await asyncio.sleep(settings.cluster_ttl_s)  # a whole TTL: four heartbeat periods
            assert await admin.exists(P + "node:frozen") == 0
            assert all(t.done() for t in node._tasks)
        finally:
            await admin.aclose()

    try:
        asyncio.run(run())
    finally:
        server.close()


def test_a_leaving_node_answers_the_requests_it_is_serving_first(tmp_path, redis_url):
    """A request being served when the node leaves (a forwarded stop collecting its finals) gets its
    answer before the node drops its entry and closes its client."""
    settings = {name: load_settings(data_dir=tmp_path / name, redis_url=redis_url, database_url=PG, node_id=name,
                                    cluster_ttl_s=4, public_url=f"http://{name}.test") for name in ("a", "b")}

    async def run() -> None:
        a, b = ClusterNode(settings["a"]), ClusterNode(settings["b"])
        began = asyncio.Event()
        finished: list[str] = []

        async def slow_stop(args: dict) -> str:  # as a stop waits for its last finals
            began.set()
            await asyncio.sleep(0.5)
            finished.append("stop")
            return "summaries"

        a.handlers["stop"] = slow_stop
        await a.start(EventBus())
        await b.start(EventBus())
        try:
            asking = asyncio.create_task(b.call("a", "stop", {}, timeout_s=60))
            await asyncio.wait_for(began.wait(), 30)
            await a.stop()
            assert finished == ["stop"] and not a._serving  # answered before the node closed its client
            assert await asyncio.wait_for(asking, 60) == "summaries"
        finally:
            await b.stop()

    asyncio.run(run())
