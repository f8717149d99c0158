"""The reaper's "first seen missing" marks, against a real redis-server (no nodes, no database)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import redis.asyncio as aioredis

from callscribe.cluster.reaper import MISSING, Reaper
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)


def test_two_short_absences_do_not_add_up_to_an_orphan(redis_url):
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        ttl_s = 0.3  # an entry must stay away 0.3 s; the mark itself lives 1.2 s
        reaper = Reaper(SimpleNamespace(redis=client, ttl_s=ttl_s), store=None)  # type: ignore[arg-type]
        await client.delete(MISSING + "c1", MISSING + "c2")
        try:
            assert await reaper.missing_for_a_ttl(["c1", "c2"], []) == []
            await asyncio.sleep(ttl_s * 0.5)
            # c1's entry came back: its mark goes, so its next absence starts from zero
            assert await reaper.missing_for_a_ttl(["c2"], ["c1"]) == []
            assert await client.exists(MISSING + "c1") == 0
            await asyncio.sleep(ttl_s * 0.7)
            assert await reaper.missing_for_a_ttl(["c1", "c2"], []) == ["c2"]
            await asyncio.sleep(ttl_s * 1.1)
            assert sorted(await reaper.missing_for_a_ttl(["c1", "c2"], [])) == ["c1", "c2"]
        finally:
            await client.delete(MISSING + "c1", MISSING + "c2")
            await client.aclose()

    asyncio.run(run())


def test_a_reaped_call_gets_the_interrupted_hooks(tmp_path, redis_url):
    """A call open in the database whose directory entry stays away a whole TTL is closed, and the
    surfaces' on_interrupted hooks (memories' recovery) run for it, as at a single node's restart."""
    from datetime import datetime, timedelta, timezone

    from callscribe.calls.events import CallRef, CallStateEvent
    from callscribe.cluster.node import ClusterNode
    from callscribe.cluster.reaper import LOOK_KEY
    from callscribe.config import load_settings
    from callscribe.store import Store

    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, node_id="survivor", cluster_ttl_s=2,
                             database_url="postgresql+psycopg://u@127.0.0.1:1/db",  # never connected to
                             public_url="http://127.0.0.1:1")
    settled: list[tuple[list[str], datetime]] = []

    def hook(db, call_ids, when):  # runs on the store's writer thread, like memories_wire.recover
        settled.append((list(call_ids), when))

    async def run() -> None:
        store = Store(f"sqlite:///{tmp_path / 'calls.db'}")
        await store.start()
        node = ClusterNode(settings)
        ref = CallRef("c-orphan", "acme", "twilio", "g-orphan")
        long_ago = datetime.now(timezone.utc) - timedelta(minutes=1)
        await store.db.write(store.calls.save_events, [(CallStateEvent(ref, 1, "media-connected", {}, long_ago), None)])
        await node.redis.delete(MISSING + "c-orphan", LOOK_KEY)
        reaper = Reaper(node, store, [hook])
        try:
            await reaper.tick()  # first seen missing
            assert settled == []
            await asyncio.sleep(settings.cluster_ttl_s + 0.2)
            await node.redis.delete(LOOK_KEY)
            await reaper.tick()
            assert [ids for ids, _ in settled] == [["c-orphan"]]
            assert (await store.db.read(store.calls.find_call, "acme", "g-orphan")).state == "interrupted"
            await node.redis.delete(LOOK_KEY)
            await reaper.tick()  # closed already: nothing settled twice
            assert len(settled) == 1
        finally:
            await node.redis.delete(MISSING + "c-orphan", LOOK_KEY)
            await node.redis.aclose()
            store.close()

    asyncio.run(run())
