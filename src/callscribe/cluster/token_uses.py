"""Stream-token first-use bindings shared by every node: a URL bound to one call on node A cannot be
used for another call on node B. A key per token (its SHA-256) with the token's remaining life as
TTL, set with NX: the first node to bind it wins, later uses compare with the stored binding.

The check is one loopback round trip when a media socket starts its protocol, made with the asyncio
client (`bind_async`, what the adapters call) so an unresponsive Redis never blocks the event loop;
a one-second timeout bounds it. `bind` (blocking client) stays for synchronous callers. When Redis
cannot be reached the local binding decides, as on one node."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Hashable

from callscribe.tokens import TokenUses

log = logging.getLogger(__name__)
PREFIX = "callscribe:token:"


class ClusterTokenUses(TokenUses):
    def __init__(self, redis_url: str) -> None:
        super().__init__()
        import redis

        import redis.asyncio as aioredis

        self._redis = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._aredis = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def bind(self, token: str, binding: Hashable, ttl_s: float) -> bool:
        key, value = _key(token), json.dumps(binding, default=str)
        try:
            if self._redis.set(key, value, nx=True, px=max(int(ttl_s * 1000), 1)):
                return True
            stored = self._redis.get(key)
        except Exception as exc:
            log.warning("cluster: token binding not shared (%s); this node's decides", exc)
            return super().bind(token, binding, ttl_s)
        return _same(stored, value)

    async def bind_async(self, token: str, binding: Hashable, ttl_s: float) -> bool:
        key, value = _key(token), json.dumps(binding, default=str)
        try:
            if await self._aredis.set(key, value, nx=True, px=max(int(ttl_s * 1000), 1)):
                return True
            stored = await self._aredis.get(key)
        except Exception as exc:
            log.warning("cluster: token binding not shared (%s); this node's decides", exc or type(exc).__name__)
            return super().bind(token, binding, ttl_s)
        return _same(stored, value)

    async def aclose(self) -> None:
        """Close both Redis clients (at shutdown, once no media socket can bind a token any more)."""
        self._redis.close()
        await self._aredis.aclose()


def _key(token: str) -> str:
    return PREFIX + hashlib.sha256(token.encode()).hexdigest()


def _same(stored: object, value: str) -> bool:
    if stored is None:  # expired between the two commands
        return True
    return (stored.decode() if isinstance(stored, bytes) else str(stored)) == value
