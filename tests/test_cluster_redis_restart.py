"""Cluster mode across a Redis restart: Redis holds only what the nodes' heartbeats remake, so after
Redis comes back (empty) the directory is rebuilt and control requests are routed again; the call
in progress goes on. Uses a redis-server of its own (the session's may be shared)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from sqlalchemy import create_engine, text

from cluster_helpers import Node, RedisProcess, pg_url  # noqa: F401 (fixture)
from e2e_helpers import TwilioSender, WebhookReceiver
from test_cluster_nodes import audio, start_body, stream_url, until  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.postgres,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")]


def stored_state(url: str, guid: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT state FROM calls WHERE guid = :g"), {"g": guid}).scalar_one())
    finally:
        engine.dispose()


async def test_routing_comes_back_after_redis_restarts(tmp_path, pg_url, audio):
    redis = RedisProcess().start()
    hook = WebhookReceiver()
    secret = {"CALLSCRIBE_TOKEN_SECRET": "t" * 40, "CALLSCRIBE_WEBHOOK_URL": hook.url}
    a = Node("node-a", tmp_path, redis.url, pg_url, **secret)
    b = Node("node-b", tmp_path, redis.url, pg_url, **secret)
    try:
        a.start().wait_ready()
        b.start().wait_ready()
        guid = "CA-restart-1"
        sender = TwilioSender(stream_url(a), guid)
        await sender.open()
        await until(lambda: a.get(f"/v1/calls/{guid}").status_code == 200, "media connected on A")
        await asyncio.sleep(5.0)  # older than the TTL (4 s): only the reaper's own rule protects it now
        redis.stop()
        await asyncio.sleep(2.0)
        redis.start()  # empty: no directory, no nodes
        # Within a few heartbeats both nodes and A's call are back in the directory; B routes again.
        started = await until(lambda: (r := b.post("/mg-autotranscribe/v1/start-streaming", start_body(guid)))
                              .status_code == 200 and r, "start routed to A again", 60)
        assert set(started.json()["autotranscribeResponse"]) == {"customer", "agent"}
        # Redis came back empty, yet no live call was taken for a lost node's: A put its call back
        # well within a TTL, and an entry must stay away a whole TTL before its call is closed.
        await asyncio.sleep(10.0)
        assert stored_state(pg_url, guid) != "media-interrupted"  # the database's, not A's live view
        await sender.send_audio(audio, speed=2.0)
        await until(lambda: len(hook.transcripts(guid)) >= 2, "webhooks of both turns")
        stopped = b.post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": guid})
        assert stopped.status_code == 200, stopped.text
        await sender.close()
    finally:
        a.stop()
        b.stop()
        hook.close()
        redis.close()
