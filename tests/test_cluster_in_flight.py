"""The cluster-wide 409-202 guard against a real redis-server (no nodes)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from callscribe.api.errors import ApiError
from callscribe.cluster import in_flight
from callscribe.cluster.in_flight import ClusterInFlight
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)

NAME = 'callscribe:inflight:["acme","twilio","g-held"]'


def test_a_hold_is_short_lived_refreshed_while_held_and_released_only_by_its_owner(redis_url, monkeypatch):
    monkeypatch.setattr(in_flight, "HOLD_TTL_MS", 600)  # refreshed every 0.2 s

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        a = ClusterInFlight(SimpleNamespace(id="a", redis=client))  # type: ignore[arg-type]
        b = ClusterInFlight(SimpleNamespace(id="b", redis=client))  # type: ignore[arg-type]
        key = ("acme", "twilio", "g-held")
        await client.delete(NAME)
        try:
            async with a.hold(key):
                assert 0 < await client.pttl(NAME) <= 600
                await asyncio.sleep(1.2)  # twice the TTL: only the refreshes keep it
                with pytest.raises(ApiError) as refused:
                    async with b.hold(key):
                        pass
                assert refused.value.code == "409-202"
                await client.set(NAME, "another request's token", px=5000)  # as after an expiry and a take-over
            assert await client.get(NAME) == "another request's token"  # not deleted by a's release
            await client.delete(NAME)
            async with b.hold(key):
                pass
            assert await client.exists(NAME) == 0  # released by its owner
        finally:
            await client.delete(NAME)
            await client.aclose()

    asyncio.run(run())
