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
