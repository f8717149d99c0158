"""A node's shutdown, in-process against a real Redis and PostgreSQL: it closes its calls while its
heartbeat still names it (their last events reach the other nodes), then leaves the cluster, then
closes every Redis client it opened."""

from __future__ import annotations

import asyncio
import threading

import redis

from callscribe.app import create_app
from callscribe.config import load_settings
from cluster_helpers import pg_url, redis_server, redis_url  # noqa: F401 (fixtures)


class _StubEngine:  # no speech model: the test connects media and ends it, nothing is transcribed
    description = "stub engine (cluster shutdown test)"
    languages = frozenset({"en"})


def test_a_node_closes_its_calls_then_leaves_the_cluster_then_closes_its_redis_clients(tmp_path, redis_url, pg_url):
    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=pg_url, node_id="leaving",
                             public_url="http://127.0.0.1:1", sip_port=0, api_keys="ka:sa:acme")
    app = create_app(settings, engine=_StubEngine())
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    before = max(int(c["id"]) for c in admin.client_list())  # connections of earlier tests are not this node's
    commands: list[str] = []  # every command Redis carried out during the shutdown, in its order
    watching = threading.Event()

    def monitor() -> None:
        with admin.monitor() as m:
            watching.set()
            for cmd in m.listen():
                commands.append(str(cmd.get("command", "")))
                if "end-of-shutdown" in commands[-1]:
                    return

    async def run() -> None:
        async with app.router.lifespan_context(app):
            services = app.state.services
            await services.registry.media_connected(tenant="acme", namespace="twilio", guid="g-1",
                                                    tracks=["customer"], source="test")
            # Both Redis clients of the stream-token bindings get a connection.
            assert await services.token_uses.bind_async("tok-a", ["g-1"], 60)
            assert services.token_uses.bind("tok-b", ["g-1"], 60)
            for _ in range(600):  # hang guard: the directory names this node for the call
                if await services.cluster.owner("acme", "twilio", "g-1") is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the call never reached the directory")
            watcher.start()
            assert await asyncio.to_thread(watching.wait, 30)
        admin.echo("end-of-shutdown")
        await asyncio.to_thread(watcher.join, 30)
        # Only the test's own connections are left: the node closed every client it opened.
        others = [c for c in admin.client_list()
                  if int(c["id"]) > before and c.get("cmd") not in ("monitor", "client|list", "echo")]
        assert others == [], others

    watcher = threading.Thread(target=monitor, daemon=True)
    try:
        asyncio.run(run())
    finally:
        admin.close()
    ended = [i for i, c in enumerate(commands) if c.startswith("PUBLISH callscribe:events:") and "media-ended" in c]
    left = [i for i, c in enumerate(commands) if c == "DEL callscribe:node:leaving"]
    assert ended and left, commands
    assert ended[0] < left[0]  # the call's end reached the other nodes while this node was in the cluster
    beats = [i for i, c in enumerate(commands) if c.startswith("SET callscribe:node:leaving")]
    assert all(i < left[0] for i in beats)  # and no heartbeat puts it back afterwards


def test_a_call_that_fails_to_close_does_not_keep_the_node_in_the_cluster(tmp_path, redis_url, pg_url):
    """An exception out of registry.close() still lets the node leave (its entry dropped, its Redis
    clients closed) and stop storing and sending; the exception is not hidden."""
    import pytest

    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=pg_url, node_id="broken",
                             public_url="http://127.0.0.1:1", sip_port=0, api_keys="ka:sa:acme")
    app = create_app(settings, engine=_StubEngine())
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    before = max(int(c["id"]) for c in admin.client_list())  # connections of earlier tests are not this node's

    async def run() -> None:
        services = app.state.services
        with pytest.raises(RuntimeError, match="discard failed"):
            async with app.router.lifespan_context(app):
                await services.registry.media_connected(tenant="acme", namespace="twilio", guid="g-1",
                                                        tracks=["customer"], source="test")
                call = services.registry.find("acme", "g-1")
                discard = call.discard

                def broken() -> None:
                    discard()
                    raise RuntimeError("discard failed")

                call.discard = broken
                assert admin.exists("callscribe:node:broken")
        assert not admin.exists("callscribe:node:broken")  # left the cluster at once, not after a TTL
        others = [c for c in admin.client_list() if int(c["id"]) > before and c.get("cmd") not in ("client|list",)]
        assert others == [], others  # every Redis client the node opened is closed
        assert services.persister._task is None or services.persister._task.done()

    try:
        asyncio.run(run())
    finally:
        admin.close()
