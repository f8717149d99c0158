"""The 409-202 guard ("another request for this guid is in progress") across nodes: besides the
node's own set, a key per (tenant, namespace, guid) set with NX while a control request runs, so a
second request for the same call on another node is refused as it would be on one node. The key
lives HOLD_TTL_MS and is refreshed while the request runs, so a node killed mid-request locks the
guid for seconds, not minutes; refresh and release touch the key only while it is still this
request's (compare-and-set in one Lua script), never another's that took it after an expiry."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Hashable

from callscribe.api.errors import ApiError
from callscribe.api.limits import InFlight
from callscribe.cluster.node import P, ClusterNode

log = logging.getLogger(__name__)
HOLD_TTL_MS = 15_000  # refreshed every third of it while the request runs
# KEYS[1] the hold, ARGV[1] this request's token (ARGV[2] the new TTL): only while it is ours.
_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class ClusterInFlight(InFlight):
    def __init__(self, node: ClusterNode) -> None:
        super().__init__()
        self.node = node

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        async with super().hold(key):
            name = P + "inflight:" + json.dumps(key, default=str, separators=(",", ":"))
            token = self.node.id + ":" + uuid.uuid4().hex
            try:
                held_elsewhere = not await self.node.redis.set(name, token, nx=True, px=HOLD_TTL_MS)
            except Exception as exc:  # Redis away: this node's own guard is all there is
                log.warning("cluster: in-progress guard not shared (%s)", exc)
                held_elsewhere = False
            if held_elsewhere:
                raise ApiError(409, "409-202", "Another request for this guid is in progress")
            refresh = asyncio.create_task(_refresh(self.node.redis, name, token))
            try:
                yield
            finally:
                refresh.cancel()
                await _release(self.node.redis, name, token)


async def _refresh(redis: Any, name: str, token: str) -> None:
    while True:
        await asyncio.sleep(HOLD_TTL_MS / 3000)
        try:
            await redis.eval(_REFRESH, 1, name, token, HOLD_TTL_MS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: the next refresh tries again
            log.warning("cluster: in-progress guard not refreshed (%s)", exc)


async def _release(redis: Any, name: str, token: str) -> None:
    try:
        await redis.eval(_RELEASE, 1, name, token)
    except Exception:  # the key's TTL ends it
        pass
