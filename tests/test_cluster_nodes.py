"""Cluster mode end to end: three `callscribe serve` nodes on loopback ports sharing a real
redis-server and PostgreSQL database.

- A Twilio stream to node A, start-streaming and stop-streaming sent to node B: the legs, summaries
  and webhooks are those of one node; GET messages and the events WebSocket on node C see it all,
  and `?since=` resumes on another node.
- A full node hands out another node's URL and reads out of rotation on /readyz.
- kill -9 of node A mid-call: B closes A's call as interrupted once A's directory entries expire,
  A's stored finals reach the webhook (sent by the survivors), and a call on node B goes on.
Waits are generous hang guards, never timing assertions.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import pytest
import websockets

from callscribe.testing import speech
from cluster_helpers import HEADERS, KEY, Node, pg_url, redis_server, redis_url  # noqa: F401 (fixtures)
from e2e_helpers import EventsSubscriber, TwilioSender, WebhookReceiver
from servers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TURNS = [("customer", "Hello, I would like to check the status of my order please."),
         ("agent", "Of course. Your parcel left our warehouse this morning.")]


@pytest.fixture(scope="module")
def audio():
    call = speech.build_call(TURNS, gap_s=1.2)
    return {"inbound": speech.telephony(call.tracks["customer"]), "outbound": speech.telephony(call.tracks["agent"])}


@pytest.fixture
def cluster(tmp_path, redis_url, pg_url):
    hook = WebhookReceiver()
    nodes = {name: Node(name, tmp_path, redis_url, pg_url, CALLSCRIBE_WEBHOOK_URL=hook.url, **extra)
             for name, extra in (("node-a", {}), ("node-b", {}), ("node-c", {"CALLSCRIBE_NODE_MAX_LEGS": "1"}))}
    try:
        nodes["node-a"].start().wait_ready()  # the first makes the database's tables; then the others together
        for node in ("node-b", "node-c"):
            nodes[node].start()
        for node in ("node-b", "node-c"):
            nodes[node].wait_ready()
        yield nodes["node-a"], nodes["node-b"], nodes["node-c"], hook
    finally:
        for node in nodes.values():
            node.stop()
        hook.close()


def stream_url(node: Node) -> str:
    r = node.get("/mg-autotranscribe/v1/twilio-media-stream-url")
    assert r.status_code == 200, r.text
    return r.json()["streamingUrl"]


def start_body(guid: str) -> dict:
    return {"namespace": "twilio", "guid": guid, "customerId": "cust-1", "agentId": "agent-1"}


def texts(hook: WebhookReceiver, guid: str) -> list[str]:
    return [b["autotranscribeResponse"]["utterance"][0]["text"] for b in hook.transcripts(guid)]


async def until(predicate, what: str, limit_s: float = 120.0):
    async with asyncio.timeout(limit_s):  # a hang guard only
        while not (value := predicate()):
            await asyncio.sleep(0.1)
    return value


async def test_stream_on_a_control_on_b_reads_on_c(cluster, audio):
    a, b, c, hook = cluster
    guid = "CA-cluster-1"
    url = stream_url(a)
    assert urlparse(url).port == a.port  # A has room: its own URL
    sender = TwilioSender(url, guid)
    await sender.open()
    await until(lambda: a.get(f"/v1/calls/{guid}").status_code == 200, "media connected on A")

    # Control on B: carried out by A, answered by B with A's legs.
    started = b.post("/mg-autotranscribe/v1/start-streaming", start_body(guid))
    assert started.status_code == 200, started.text
    legs = started.json()["autotranscribeResponse"]
    assert set(legs) == {"customer", "agent"} and all(leg["status"]["code"] == 1000 for leg in legs.values())
    again = b.post("/mg-autotranscribe/v1/start-streaming", start_body(guid))
    assert again.status_code == 409 and again.json()["error"]["code"] == "409-201"

    # The events WebSocket on C, for a call whose media is on A.
    events = EventsSubscriber(c.ws_url, guid, *KEY)
    await events.start()
    talking = asyncio.create_task(sender.send_audio(audio, speed=2.0))
    await until(lambda: any(m["type"] == "final" for m in events.messages), "the first final on C")
    # Mid-call, a subscriber that lost C resumes on B from the last seq it had.
    had = max(m["seq"] for m in events.messages)
    resumed_mid = EventsSubscriber(b.ws_url, guid, *KEY)
    resumed_mid.url += f"&since={had}"
    await resumed_mid.start()
    await talking
    await until(lambda: len(hook.transcripts(guid)) >= 2, "webhooks of both turns")

    stopped = b.post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": guid})
    assert stopped.status_code == 200, stopped.text
    summaries = stopped.json()["autotranscribeResponse"]
    for role in ("customer", "agent"):
        assert summaries[role]["streamId"] == legs[role]["streamId"]
        assert summaries[role]["summary"]["audioDurationMs"] > 1000
        assert summaries[role]["summary"]["transcripts"] >= 1
    again = b.post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": guid})
    assert again.status_code == 409 and again.json()["error"]["code"] == "409-201"

    for body in hook.transcripts(guid):
        assert body["streamId"] == legs[body["sender"]["role"]]["streamId"]
    said = " ".join(texts(hook, guid)).lower()
    assert "order" in said and "parcel" in said

    # GET messages and the native view on C.
    items = c.get("/conversation/v1/conversation/messages", params={"externalId": guid}).json()["items"]
    assert sorted(i["text"] for i in items) == sorted(texts(hook, guid))
    view = c.get(f"/v1/calls/{guid}").json()
    assert view["active"] and view["live"]["media"] == "connected"
    listed = {call["guid"]: call for call in c.get("/v1/calls").json()["calls"]}
    assert listed[guid]["active"]  # the dashboard's list on C shows A's call live

    await sender.close()
    await events.wait_closed()
    assert events.close_code == 1000
    finals = [m for m in events.messages if m["type"] == "final"]
    assert sorted(m["text"] for m in finals) == sorted(texts(hook, guid))
    seqs = [m["seq"] for m in events.messages]
    assert seqs == sorted(set(seqs))  # in order, no duplicate
    assert events.messages[-1]["type"] == "state" and events.messages[-1]["state"] == "media-ended"
    await resumed_mid.wait_closed()
    mid_seqs = [m["seq"] for m in resumed_mid.messages]
    assert mid_seqs == sorted(set(mid_seqs)) and all(seq > had for seq in mid_seqs)
    # Nothing stored is missed (partials are best effort): every final and state after `had` is there.
    assert {m["seq"] for m in events.messages if m["seq"] > had and m["type"] != "partial"} <= set(mid_seqs)

    # Resume on another node: since=N replays exactly what came after N.
    middle = seqs[len(seqs) // 2]
    resumed = EventsSubscriber(b.ws_url, guid, *KEY)
    resumed.url += f"&since={middle}"
    await resumed.start()
    await resumed.wait_closed()
    stored_after = [s for s in seqs if s > middle and any(
        m["seq"] == s and m["type"] != "partial" for m in events.messages)]
    assert [m["seq"] for m in resumed.messages if m["type"] != "partial"] == stored_after


async def test_a_start_waits_for_media_that_arrives_on_another_node(cluster, audio):
    a, b, c, hook = cluster
    guid = "CA-late-1"
    loop = asyncio.get_running_loop()
    pending = loop.run_in_executor(None, b.post, "/mg-autotranscribe/v1/start-streaming", start_body(guid))
    await asyncio.sleep(1.0)  # B is waiting (start_wait_for_media_s) when the media reaches A
    busy = c.post("/mg-autotranscribe/v1/start-streaming", start_body(guid))  # meanwhile, on another node
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "409-202"
    sender = TwilioSender(stream_url(a), guid)
    await sender.open()
    started = await pending
    assert started.status_code == 200, started.text
    assert set(started.json()["autotranscribeResponse"]) == {"customer", "agent"}
    nowhere = b.post("/mg-autotranscribe/v1/start-streaming", start_body("CA-never-1"))
    assert nowhere.status_code == 400 and nowhere.json()["error"]["code"] == "400-203"
    await sender.send_audio(audio, speed=2.0)
    await until(lambda: len(hook.transcripts(guid)) >= 2, "webhooks of both turns")
    stopped = c.post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": guid})
    assert stopped.status_code == 200, stopped.text
    await sender.close()


async def test_full_node_hands_out_another_nodes_url(cluster):
    a, b, c, hook = cluster
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "full"
    assert a.get("/readyz").status_code == 200
    for _ in range(3):
        assert urlparse(stream_url(c)).port in (a.port, b.port)
        url = c.post("/autotranscribe/v1/streaming-url", {"externalId": "x-1"}).json()["streamingUrl"]
        assert urlparse(url).port in (a.port, b.port)
    # The URL C issued is accepted by the node it names (the token secret is shared).
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 60))["message"] == "startResponse"
    await ws.close()
    # A node that stops leaves placement: C hands out only A's address once B is gone.
    b.stop()
    await until(lambda: all(urlparse(stream_url(c)).port == a.port for _ in range(4)), "B out of placement", 60)


async def test_kill_9_of_a_node_interrupts_only_its_calls(cluster, audio):
    a, b, c, hook = cluster
    on_a, on_b = "CA-dies-1", "CA-lives-1"
    sender_a = TwilioSender(stream_url(a), on_a, "MZa")
    sender_b = TwilioSender(stream_url(b), on_b, "MZb")
    await sender_a.open()
    await sender_b.open()
    await until(lambda: c.get(f"/v1/calls/{on_a}").status_code == 200 and
                c.get(f"/v1/calls/{on_b}").status_code == 200, "both calls connected")
    for guid in (on_a, on_b):
        r = c.post("/mg-autotranscribe/v1/start-streaming", start_body(guid))
        assert r.status_code == 200, r.text

    watcher = EventsSubscriber(c.ws_url, on_a, *KEY)  # on C, for A's call
    await watcher.start()
    hook.accept.clear()  # the receiver is down: A's finals wait in the shared outbox
    await sender_a.send_audio(audio, speed=2.0)
    await until(lambda: len(c.get("/conversation/v1/conversation/messages",
                                  params={"externalId": on_a}).json().get("items", [])) >= 2, "A's finals stored")
    a.kill()
    hook.accept.set()

    # Within the directory's TTL (4 s here) and a reaper pass, B reads A's call as interrupted.
    await until(lambda: b.get(f"/v1/calls/{on_a}").json().get("state") == "interrupted", "A's call interrupted", 30)
    stored = c.get("/conversation/v1/conversation/messages", params={"externalId": on_a}).json()["items"]
    await until(lambda: len(hook.transcripts(on_a)) >= len(stored), "A's stored finals delivered")
    assert sorted(set(texts(hook, on_a))) == sorted(i["text"] for i in stored)
    await watcher.wait_closed(60)  # the events socket on C is told, and closed
    assert watcher.messages[-1]["type"] == "state" and watcher.messages[-1]["state"] == "media-interrupted"
    assert watcher.close_code == 1000

    # B's call is untouched: it still streams, transcribes, and stops with its summaries.
    view = c.get(f"/v1/calls/{on_b}").json()
    assert view["active"] and view["state"] != "interrupted"
    await sender_b.send_audio(audio, speed=2.0)
    await until(lambda: len(hook.transcripts(on_b)) >= 2, "B's finals delivered")
    stopped = c.post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "twilio", "guid": on_b})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["autotranscribeResponse"]["customer"]["summary"]["transcripts"] >= 1
    await sender_b.close()
