"""Limits that every media socket lives under, against the running app with real clients: stream
tokens bound to their first use, caps on sockets that have not started, a maximum session length,
timeline gaps that cost nothing, and keyed digits masked like spoken ones."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from streamdouble.protocol import MediaStreamEncoder

from callscribe.config import load_settings
from servers import running_app

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             max_unstarted_connections=3, max_call_s=2)
    with running_app(settings, engine=engine) as s:
        yield s


def twilio_url(server) -> str:
    return httpx.get(server.url + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=ACME).json()["streamingUrl"]


def start(server, guid: str) -> httpx.Response:
    return httpx.post(server.url + "/mg-autotranscribe/v1/start-streaming", headers=ACME, json={
        "namespace": "twilio", "guid": guid, "customerId": "c", "agentId": "a",
        "autotranscribeParams": {"audioRecordingAllowed": True}})


async def closed(ws) -> websockets.frames.Close | None:
    try:
        async with asyncio.timeout(30):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.protocol.close_rcvd


def test_sockets_that_never_start_are_capped(server):
    async def go():
        idle = [await websockets.connect(twilio_url(server)) for _ in range(3)]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(twilio_url(server))
        for ws in idle:
            await ws.close()
        await asyncio.sleep(0.2)
        again = await websockets.connect(twilio_url(server))  # room again once they went
        await again.close()
        return refused.value.response.status_code

    assert asyncio.run(go()) == 503


def test_a_session_ends_at_the_maximum_length_and_keyed_digits_are_masked(server, wait_until):
    enc = MediaStreamEncoder()

    async def go():
        async with websockets.connect(twilio_url(server)) as ws:
            await ws.send(json.dumps(enc.connected()))
            await ws.send(json.dumps(enc.start(tracks=["inbound"], custom_parameters={"guid": "long-1"})))
            await ws.send(json.dumps(enc.dtmf("7")))
            view = None
            for _ in range(200):  # 20 ms frames until the server ends it (max_call_s = 2)
                try:
                    await ws.send(json.dumps(enc.media(b"\xff" * 160)))
                except websockets.ConnectionClosed:
                    break
                if view is None:
                    view = httpx.get(server.url + "/v1/calls/long-1", headers=ACME).json()
                await asyncio.sleep(0.02)
            return view, await closed(ws)

    view, close = asyncio.run(go())
    assert close is not None and close.code == 1008 and "maximum" in close.reason
    digits = [e["data"]["digit"] for e in view["live"]["protocol_events"] if e["name"] == "dtmf"]
    assert digits == ["#"]  # transcription is redacted by default: a keyed digit is not shown


def test_a_timestamp_jump_records_nothing_for_the_gap(server, wait_until):
    enc = MediaStreamEncoder()
    frame = b"\x7f\x00" * 80

    async def go():
        async with websockets.connect(twilio_url(server)) as ws:
            await ws.send(json.dumps(enc.connected()))
            await ws.send(json.dumps(enc.start(tracks=["inbound"], custom_parameters={"guid": "gap-1"})))
            await ws.send(json.dumps(enc.media(frame)))
            await asyncio.to_thread(lambda: wait_until(lambda: start(server, "gap-1").status_code == 200, "start"))
            for jump in (0, 50_000, 100_000):  # Twilio's counter jumps 50 s, twice
                msg = enc.media(frame)
                msg["media"]["timestamp"] = str(jump + 20)
                await ws.send(json.dumps(msg))
            await ws.send(json.dumps(enc.stop()))
            await closed(ws)

    asyncio.run(go())
    stopped = wait_until(lambda: (v := httpx.get(server.url + "/v1/calls/gap-1", headers=ACME).json())
                         and v.get("recordings") and v, "the recording")
    assert stopped["recordings"][0]["durationMs"] <= 100  # three 20 ms frames were received, no made-up silence
    track = stopped["live"]["tracks"][0]
    assert track["position_ms"] >= 100_000 and track["received_ms"] <= 100


def test_a_direct_stream_token_serves_one_speaker(server):
    url = httpx.post(server.url + "/autotranscribe/v1/streaming-url", headers=ACME,
                     json={"externalId": "pair-1"}).json()["streamingUrl"]

    async def go():
        async with websockets.connect(url) as a:
            await a.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C"}}))
            first = json.loads(await a.recv())
            async with websockets.connect(url) as b:  # the same URL, another speaker
                await b.send(json.dumps({"message": "startStream", "sender": {"role": "agent", "externalId": "A"}}))
                second = json.loads(await b.recv())
            await a.send(json.dumps({"message": "finishStream"}))
            return first, second

    first, second = asyncio.run(go())
    assert first["message"] == "startResponse"
    assert second["message"] == "finalResponse" and second["status"]["code"] == "1008"
