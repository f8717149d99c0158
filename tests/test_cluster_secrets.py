"""Cluster mode, shared secrets: every node signs and accepts stream tokens, signs webhooks and
accepts generated API keys with the values kept in Redis (or given in settings), never one node's
data dir."""

from __future__ import annotations

import pytest

from callscribe import tokens
from callscribe.config import ConfigError, load_settings
from callscribe.credentials import load_or_create_api_keys
from callscribe.delivery.webhook import load_or_create_secret
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here


def node_settings(tmp_path, name, redis, **extra):
    return load_settings(data_dir=tmp_path / name, redis_url=redis, database_url=PG,
                         public_url="http://127.0.0.1:1", **extra)


def test_a_token_issued_by_one_node_is_accepted_by_another(tmp_path, redis_url):
    a, b = node_settings(tmp_path, "a", redis_url), node_settings(tmp_path, "b", redis_url)
    tok = tokens.token_signer(a).issue("acme", "twilio-media", 60)
    tokens._signers.clear()  # as if node B were another process
    assert tokens.token_signer(b).verify(tok, "twilio-media")["tenant"] == "acme"
    assert not (tmp_path / "a" / "token-secret").exists() and not (tmp_path / "b" / "token-secret").exists()
    # A single node keeps its own secret in its data dir, as before, and does not accept the cluster's.
    single = load_settings(data_dir=tmp_path / "single")
    assert tokens.token_signer(single).verify(tok, "twilio-media") is None
    assert (tmp_path / "single" / "token-secret").exists()


def test_token_secret_setting_wins_over_redis(tmp_path, redis_url):
    secret = "s" * 40
    a = node_settings(tmp_path, "a", redis_url, token_secret=secret)
    tok = tokens.token_signer(a).issue("acme", "p", 60)
    tokens._signers.clear()
    other = load_settings(data_dir=tmp_path / "x", token_secret=secret)  # same secret, no Redis at all
    assert tokens.token_signer(other).verify(tok, "p") is not None
    assert tokens.token_signer(node_settings(tmp_path, "b", redis_url)).verify(tok, "p") is None


def test_webhook_secret_and_api_key_are_generated_once_for_every_node(tmp_path, redis_url):
    a, b = node_settings(tmp_path, "a", redis_url), node_settings(tmp_path, "b", redis_url)
    assert load_or_create_secret(a) == load_or_create_secret(b)
    assert load_or_create_secret(a).startswith("whsec_")
    assert load_or_create_api_keys(a) == load_or_create_api_keys(b)
    assert not list((tmp_path / "a").glob("*")) if (tmp_path / "a").exists() else True


def test_cluster_mode_needs_postgresql(tmp_path):
    with pytest.raises(ConfigError, match="CALLSCRIBE_REDIS_URL"):
        load_settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigError, match="CALLSCRIBE_REDIS_URL"):
        load_settings(data_dir=tmp_path, redis_url="http://x", database_url=PG)
    with pytest.raises(ConfigError, match="CALLSCRIBE_NODE_ID"):
        load_settings(data_dir=tmp_path, node_id="a b")


def test_a_cluster_node_does_not_start_without_its_public_url(tmp_path, monkeypatch, capsys):
    """Placement hands out CALLSCRIBE_PUBLIC_URL; one guessed from host and port would point clients
    and the other nodes at an address they cannot reach, so `serve` refuses (status 2, one line,
    naming the setting, quoting no secret)."""
    from callscribe.cli import main

    for name in [k for k in __import__("os").environ if k.startswith("CALLSCRIBE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CALLSCRIBE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CALLSCRIBE_REDIS_URL", "redis://:redis-pw-123@127.0.0.1:1/0")
    monkeypatch.setenv("CALLSCRIBE_DATABASE_URL", "postgresql+psycopg://u:pg-pw-456@127.0.0.1:1/db")
    monkeypatch.setenv("CALLSCRIBE_PORT", "1")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CALLSCRIBE_PUBLIC_URL" in err and len(err.strip().splitlines()) == 1
    assert "redis-pw-123" not in err and "pg-pw-456" not in err
    monkeypatch.setenv("CALLSCRIBE_PUBLIC_URL", "https://calls.example.com/n1")
    assert load_settings().resolved_public_url == "https://calls.example.com/n1"


def test_a_stream_token_bound_on_one_node_is_bound_on_every_node(redis_url):
    from callscribe.cluster.token_uses import ClusterTokenUses

    a, b = ClusterTokenUses(redis_url), ClusterTokenUses(redis_url)
    assert a.bind("tok-1", ("CA1", "customer"), 60)
    assert not b.bind("tok-1", ("CA2", "customer"), 60)  # another call, on another node: refused
    assert b.bind("tok-1", ("CA1", "customer"), 60)  # a reconnect of the same call: allowed
    assert b.bind("tok-2", "CA3", 60) and not a.bind("tok-2", "CA4", 60)


def test_a_single_node_never_loads_the_cluster_code(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from callscribe.config import load_settings; from callscribe.app import create_app; "
            f"create_app(load_settings(data_dir={str(tmp_path)!r})); "
            "print(sorted(m for m in sys.modules if m.startswith(('callscribe.cluster', 'redis'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in __import__("os").environ.items() if not k.startswith("CALLSCRIBE_")})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_an_unreachable_redis_is_one_line_naming_the_setting():
    from callscribe.cluster.secrets import shared_secret

    with pytest.raises(ConfigError, match="^CALLSCRIBE_REDIS_URL: cannot reach Redis"):
        shared_secret("redis://127.0.0.1:1/0", "token", lambda: "x")


def test_a_stream_token_binding_is_shared_from_the_event_loop(redis_url):
    import asyncio

    from callscribe.cluster.token_uses import ClusterTokenUses

    async def run() -> None:
        a, b = ClusterTokenUses(redis_url), ClusterTokenUses(redis_url)
        assert await a.bind_async("tok-async", ["g1", "customer"], 60)
        assert await b.bind_async("tok-async", ["g1", "customer"], 60)  # the same binding again: allowed
        assert not await b.bind_async("tok-async", ["g2", "customer"], 60)

    asyncio.run(run())


def test_an_unresponsive_redis_does_not_block_the_event_loop_during_a_bind():
    """A Redis that accepts connections and never answers: the bind falls back to this node's
    binding after its timeout, and the event loop goes on serving other work meanwhile."""
    import asyncio
    import socket

    from callscribe.cluster.token_uses import ClusterTokenUses

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepted by the kernel, never read nor answered
    try:
        async def run() -> None:
            uses = ClusterTokenUses(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.05)
                    ticks += 1

            task = asyncio.create_task(ticker())
            try:
                assert await uses.bind_async("tok-silent", "g1", 60)  # this node's binding decides
            finally:
                task.cancel()
            assert ticks > 0
            assert not await uses.bind_async("tok-silent", "g2", 60)

        asyncio.run(run())
    finally:
        silent.close()


def test_generated_secrets_are_put_back_by_the_running_nodes_after_redis_lost_them(tmp_path, redis_url, caplog):
    """Redis restarts empty while node A runs: A's heartbeat puts the secrets it uses back (SET NX),
    so a node starting afterwards takes A's instead of making new ones; a node that finds another
    value than its own says so in an error log naming the setting (never the values)."""
    import asyncio
    import logging

    import redis

    from callscribe.cluster.node import ClusterNode
    from callscribe.cluster.secrets import PREFIX

    a = node_settings(tmp_path, "a", redis_url)
    webhook, keys = load_or_create_secret(a), load_or_create_api_keys(a)
    tok = tokens.token_signer(a).issue("acme", "p", 60)
    admin = redis.Redis.from_url(redis_url)

    async def run() -> None:
        node = ClusterNode(a)
        try:
            admin.flushdb()  # as a Redis restarted without persistence
            await node.beat()
            tokens._signers.clear()  # node B, another process, starts now
            b = node_settings(tmp_path, "b", redis_url)
            assert load_or_create_secret(b) == webhook
            assert load_or_create_api_keys(b) == keys
            assert tokens.token_signer(b).verify(tok, "p") is not None

            other = "whsec_" + "A" * 43 + "="
            admin.set(PREFIX + "webhook", other)  # a split made before A's beat came
            with caplog.at_level(logging.ERROR, logger="callscribe.cluster.node"):
                await node.beat()
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "CALLSCRIBE_WEBHOOK_SECRET" in errors[0]
            assert webhook not in errors[0] and other not in errors[0]
            assert admin.get(PREFIX + "webhook").decode() == other  # NX: A does not overwrite it
        finally:
            await node.redis.aclose()
            admin.close()

    asyncio.run(run())
