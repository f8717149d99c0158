"""The 409-202 guard ("another request for this guid is in progress") across nodes: besides the
node's own set, a key per (tenant, namespace, guid) set with NX while a control request runs, so a
second request for the same call on another node is refused as it would be on one node. The key's
TTL only bounds a request whose node died while holding it."""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Hashable

from callscribe.api.errors import ApiError
from callscribe.api.limits import InFlight
from callscribe.cluster.node import P, ClusterNode

log = logging.getLogger(__name__)
HOLD_TTL_MS = 300_000  # longer than any control request (a start's waits, a stop's last finals)


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
            try:
                yield
            finally:
                await _release(self.node.redis, name, token)


async def _release(redis: Any, name: str, token: str) -> None:
    try:
        if await redis.get(name) == token:
            await redis.delete(name)
    except Exception:  # the key's TTL ends it
        pass
