"""Identifiers that the database cannot keep are refused where they arrive, in each surface's own
shape, on SQLite and PostgreSQL alike: a call whose row could not be written would lose every final
and webhook of that call."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from streamdouble.protocol import MediaStreamEncoder

from callscribe.config import load_settings
from servers import running_app
from test_edge_limits import closed

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


@pytest.fixture
def server(tmp_path, db_url, engine):
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys="ka:sa:acme", database_url=db_url)
    with running_app(settings, engine=engine) as s:
        yield s


def test_ids_that_do_not_fit_are_refused_in_each_surface(server):
    start = server.url + "/mg-autotranscribe/v1/start-streaming"
    for guid in ("x" * 256, "a\x00b", "tab\there"):
        r = httpx.post(start, headers=ACME, json={"namespace": "twilio", "guid": guid, "customerId": "c",
                                                  "agentId": "a"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "400-201", r.text
    for field in ("customerId", "agentId"):
        body = {"namespace": "twilio", "guid": "CA1", "customerId": "c", "agentId": "a", field: "\x00" * 3}
        r = httpx.post(start, headers=ACME, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "400-01", r.text
    r = httpx.post(server.url + "/autotranscribe/v1/streaming-url", headers=ACME, json={"externalId": "n\x00l"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "400-01"
    for path in ("/v1/calls/a%00b", "/v1/calls/" + "y" * 300, "/conversation/v1/conversation/messages?externalId=a%00b"):
        r = httpx.get(server.url + path, headers=ACME)
        assert r.status_code == 404 and "error" in r.json(), (path, r.text)


def test_a_twilio_stream_with_an_unkeepable_call_id_is_closed_and_nothing_else_is_hurt(server):
    url = httpx.get(server.url + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=ACME).json()["streamingUrl"]
    enc = MediaStreamEncoder()

    async def go():
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(enc.connected()))
            await ws.send(json.dumps(enc.start(tracks=["inbound"], custom_parameters={"guid": "bad\x00id"})))
            return await closed(ws)

    close = asyncio.run(go())
    assert close is not None and close.code == 1008 and "call id" in close.reason
    assert httpx.get(server.url + "/readyz").status_code == 200
