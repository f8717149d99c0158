"""ClusterRegistry against a real redis-server: a command forwarded to a node that does not answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from callscribe.calls.events import EventBus
from callscribe.calls.registry import NotReady
from callscribe.cluster.node import ClusterNode, call_key
from callscribe.cluster.registry import ClusterRegistry
from callscribe.config import load_settings
from cluster_helpers import redis_server, redis_url  # noqa: F401 (fixtures)
from servers import running_app

PG = "postgresql+psycopg://u@127.0.0.1:1/db"  # never connected to here


def test_a_stop_forwarded_to_a_silent_node_is_not_ready(tmp_path, redis_url):
    settings = load_settings(data_dir=tmp_path, redis_url=redis_url, database_url=PG, node_id="asker",
                             public_url="http://127.0.0.1:1")

    async def run() -> None:
        node = ClusterNode(settings)
        registry = ClusterRegistry(EventBus(), lambda: None, tmp_path)
        registry.attach(node)
        await node.start(EventBus())
        try:
            # the directory names a node that is in the peers list but listens to nothing any more
            await node.redis.set(call_key("acme", "twilio", "g-silent"),
                                 '{"node": "silent", "call_id": "c-silent", "url": "http://x"}', ex=30)
            node.peers["silent"] = {"id": "silent"}
            with pytest.raises(NotReady):
                await registry.stop_streaming("acme", "twilio", "g-silent")
        finally:
            await node.redis.delete(call_key("acme", "twilio", "g-silent"))
            await node.stop()

    asyncio.run(run())


def test_stop_streaming_answers_503_when_the_registry_is_not_ready(tmp_path):
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys="ka:sa:acme")
    with running_app(settings, wait_ready=False) as app:
        registry = app.app.state.services.registry
        assert registry is not None

        async def silent_owner(*args, **kwargs):  # what ClusterRegistry raises for a node that did not answer
            raise NotReady()

        registry.stop_streaming = silent_owner
        resp = httpx.post(app.url + "/mg-autotranscribe/v1/stop-streaming", headers={"asapp-api-id": "ka", "asapp-api-secret": "sa"},
                          json={"namespace": "twilio", "guid": "g1"}, timeout=30)
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "503-01"
