"""Secrets every node must share, kept in Redis instead of one node's data dir.

The first node to start makes each secret and stores it with SET NX (an atomic set-if-absent, so
nodes starting at once agree on one); every node then reads the stored value. Settings, when given,
win (CALLSCRIBE_TOKEN_SECRET, CALLSCRIBE_WEBHOOK_SECRET, CALLSCRIBE_API_KEYS): a Redis without
persistence loses these keys on restart, so production deployments should set them (docs/cluster.md).
"""

from __future__ import annotations

from typing import Callable

PREFIX = "callscribe:secret:"


def shared_secret(redis_url: str, name: str, generate: Callable[[], str]) -> tuple[str, bool]:
    """The value of secret `name`, made with `generate()` if no node made it yet; and whether this
    call made it. Blocking (used while the app is built, before its event loop runs)."""
    import redis

    from callscribe.config import ConfigError

    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
    try:
        candidate = generate()
        made = bool(client.set(PREFIX + name, candidate, nx=True))
        value = client.get(PREFIX + name)
    except redis.RedisError as exc:  # one line naming the setting, as for any bad setting
        raise ConfigError(f"CALLSCRIBE_REDIS_URL: cannot reach Redis ({type(exc).__name__}: {exc})") from None
    finally:
        client.close()
    if value is None:  # deleted between the two commands: nothing sensible to share
        raise RuntimeError(f"shared secret {name} vanished from Redis")
    return value.decode() if isinstance(value, bytes) else str(value), made
