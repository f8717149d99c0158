"""Secrets every node must share, kept in Redis instead of one node's data dir.

The first node to start makes each secret and stores it with SET NX (an atomic set-if-absent, so
nodes starting at once agree on one); every node then reads the stored value. Settings, when given,
win (CALLSCRIBE_TOKEN_SECRET, CALLSCRIBE_WEBHOOK_SECRET, CALLSCRIBE_API_KEYS): a Redis without
persistence loses these keys on restart, so production deployments should set them (docs/cluster.md).

A Redis that restarts empty while nodes run would let the next node to start make a different
secret (its URLs, webhooks or API key then fail on the others). So each node puts the values it uses
back with SET NX on every heartbeat (`held`, see node.py): the running nodes' value is there again
within a quarter of the TTL, and a node that finds another value than its own logs an error.
"""

from __future__ import annotations

from typing import Callable

PREFIX = "callscribe:secret:"
# The setting that, set on every node, replaces each generated secret (named in the error log).
SETTING = {"token": "CALLSCRIBE_TOKEN_SECRET", "webhook": "CALLSCRIBE_WEBHOOK_SECRET", "api-key": "CALLSCRIBE_API_KEYS"}
_held: dict[tuple[str, str], str] = {}  # (Redis URL, name) -> the value this process uses


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
    text = value.decode() if isinstance(value, bytes) else str(value)
    _held[(redis_url, name)] = text
    return text, made


def held(redis_url: str) -> dict[str, str]:
    """The shared secrets this process took from the Redis at `redis_url`, by name."""
    return {name: value for (url, name), value in _held.items() if url == redis_url}
