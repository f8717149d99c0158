"""Placement of a call's legs, end to end: three `callscribe serve` nodes sharing a real redis-server
and PostgreSQL. The two roles of an ASAPP direct-WebSocket call each ask for a streaming URL, of
different nodes and at once; both URLs name one node, so the legs are one call there; once its media
is connected, any node hands out that node's URL for it.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import pytest
import websockets

from cluster_helpers import Node, pg_url, redis_server, redis_url  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def nodes(tmp_path, redis_url, pg_url):
    started = {name: Node(name, tmp_path, redis_url, pg_url) for name in ("node-a", "node-b", "node-c")}
    try:
        started["node-a"].start().wait_ready()  # the first makes the database's tables
        for node in ("node-b", "node-c"):
            started[node].start()
        for node in ("node-b", "node-c"):
            started[node].wait_ready()
        yield started["node-a"], started["node-b"], started["node-c"]
    finally:
        for node in started.values():
            node.stop()


def url_of(node: Node, external_id: str) -> str:
    r = node.post("/autotranscribe/v1/streaming-url", {"externalId": external_id})
    assert r.status_code == 200, r.text
    return r.json()["streamingUrl"]


async def open_leg(url: str, role: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"message": "startStream", "sender": {"role": role, "externalId": f"{role}-1"}}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
    assert answer["message"] == "startResponse" and answer["status"]["code"] == "1000", answer
    return ws


async def test_both_roles_of_a_direct_stream_call_get_the_same_node(nodes):
    a, b, c = nodes
    loop = asyncio.get_running_loop()
    ports = {a.port, b.port, c.port}
    for i in range(6):
        conversation = f"conv-{i}"
        # Customer asks A, agent asks B, at the same time.
        customer, agent = await asyncio.gather(loop.run_in_executor(None, url_of, a, conversation),
                                               loop.run_in_executor(None, url_of, b, conversation))
        assert urlparse(customer).port == urlparse(agent).port in ports, (customer, agent)

    conversation = "conv-live"
    customer, agent = await asyncio.gather(loop.run_in_executor(None, url_of, a, conversation),
                                           loop.run_in_executor(None, url_of, b, conversation))
    legs = [await open_leg(customer, "customer"), await open_leg(agent, "agent")]
    try:
        view = c.get(f"/v1/calls/{conversation}").json()  # asked of C, wherever the call is
        assert view["live"]["media"] == "connected"
        assert sorted(t["name"] for t in view["live"]["tracks"]) == ["agent", "customer"]  # one call, both legs
        # Now the directory names the call's node: every node hands out its URL for the call.
        held = urlparse(customer).port
        assert {urlparse(url_of(n, conversation)).port for n in (a, b, c)} == {held}
    finally:
        for ws in legs:
            await ws.close()
