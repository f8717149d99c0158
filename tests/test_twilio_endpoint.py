"""The Twilio stream endpoint on a real uvicorn, driven by a real WebSocket client, feeding a
recording registry: upgrade refusals, close codes, and one bad stream never touching another.

The real registry, engine and streamdouble are exercised in test_twilio_calls.py; here the point
is the socket layer, so the app holds only the Twilio routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI
from streamdouble.protocol import MediaStreamEncoder
from twilio.request_validator import RequestValidator

from callscribe.api import twilio_url
from callscribe.api.errors import install_error_handlers
from callscribe.config import Settings
from callscribe.ingest import twilio_auth, twilio_endpoint
from callscribe.ingest.twilio import MAX_MESSAGE_BYTES
from callscribe.tokens import TokenUses
from test_twilio_protocol import RecordingRegistry

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
HEADERS = {"asapp-api-id": "id1", "asapp-api-secret": "secret1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, **settings_kw):
        self.port = _free_port()
        self.settings = Settings(data_dir=tmp_path, port=self.port, api_keys="id1:secret1:acme,id2:secret2:beta",
                                 **settings_kw)
        self.registry = RecordingRegistry()
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(twilio_url.router)
        app.include_router(twilio_endpoint.router)
        app.state.services = SimpleNamespace(settings=self.settings, registry=self.registry,
                                             api_keys=self.settings.parsed_api_keys, connections=None,
                                             token_uses=TokenUses())
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off",
                                                    log_level="info", log_config=None, ws_max_size=1 << 20))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_url(self, headers=HEADERS) -> str:
        r = httpx.get(f"{self.http}/mg-autotranscribe/v1/twilio-media-stream-url", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["streamingUrl"]


@pytest.fixture
def server(tmp_path):
    with Server(tmp_path) as s:
        yield s


def _silence() -> bytes:
    return b"\xff" * 160


async def _open(url: str, **kw):
    return await websockets.connect(url, max_size=None, **kw)


async def _start(ws, enc: MediaStreamEncoder, **kw) -> None:
    await ws.send(json.dumps(enc.connected()))
    await ws.send(json.dumps(enc.start(tracks=["inbound", "outbound"], **kw)))


async def _media(ws, enc: MediaStreamEncoder, n: int) -> None:
    for _ in range(n):
        await ws.send(json.dumps(enc.media(_silence(), track="outbound")))
        await ws.send(json.dumps(enc.media(_silence(), track="inbound")))


async def _closed(ws, limit_s: float = 10) -> websockets.frames.Close | None:
    """Wait for the server to close, returning its close frame; fail if it sends any data."""
    try:
        async with asyncio.timeout(limit_s):
            async for message in ws:
                raise AssertionError(f"the server sent {message!r} on a fork stream")
    except websockets.ConnectionClosed:
        pass
    return ws.protocol.close_rcvd


async def _until(cond, limit_s: float = 10) -> None:
    deadline = time.monotonic() + limit_s  # a hang guard, not a measurement
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def test_stream_url_needs_asapp_credentials(server):
    r = httpx.get(f"{server.http}/mg-autotranscribe/v1/twilio-media-stream-url")
    assert r.status_code == 401 and r.json()["error"]["code"] == "401-01"
    bad = {"asapp-api-id": "id1", "asapp-api-secret": "nope"}
    assert httpx.get(f"{server.http}/mg-autotranscribe/v1/twilio-media-stream-url", headers=bad).status_code == 401
    url = server.stream_url()
    assert url.startswith(f"ws://127.0.0.1:{server.port}/mg-autotranscribe/v1/twilio-media?token=")
    token = twilio_auth.token_from_query(url.partition("?")[2])
    assert twilio_auth.tenant_of_token(server.settings, token) == "acme"
    beta = server.stream_url({"asapp-api-id": "id2", "asapp-api-secret": "secret2"})
    assert twilio_auth.tenant_of_token(server.settings, twilio_auth.token_from_query(beta.partition("?")[2])) == "beta"


async def test_one_url_serves_the_call_of_its_first_use(server):
    """A stream URL that leaked cannot claim another call: its token is bound to the first call it
    started. The same call may reconnect with it (a dropped socket)."""
    url = server.stream_url()
    for n, guid in enumerate(["call-0", "call-0"]):  # the stream, then its reconnect
        enc = MediaStreamEncoder()
        ws = await _open(url)
        await _start(ws, enc, custom_parameters={"guid": guid})
        await _media(ws, enc, 10)
        await ws.send(json.dumps(enc.stop()))
        close = await _closed(ws)
        assert close is not None and close.code == 1000
        call = server.registry.calls[n]
        assert call.guid == guid and call.ends == ["stop"]
        assert len(call.track("inbound")) == 10 and len(call.track("outbound")) == 10
    enc = MediaStreamEncoder()
    ws = await _open(url)
    await _start(ws, enc, custom_parameters={"guid": "call-1"})
    close = await _closed(ws)
    assert close is not None and close.code == 1008 and "another call" in close.reason
    assert len(server.registry.calls) == 2  # the other call was never connected
    assert {c["tenant"] for c in server.registry.connections} == {"acme"}


async def test_abrupt_close_ends_the_call(server):
    enc = MediaStreamEncoder()
    ws = await _open(server.stream_url())
    await _start(ws, enc)
    await _media(ws, enc, 3)
    await _until(lambda: server.registry.calls and len(server.registry.calls[0].frames) == 6)
    ws.transport.abort()  # TCP gone, no close frame, no stop
    await _until(lambda: server.registry.calls[0].ends)
    assert server.registry.calls[0].ends[0].startswith(("connection lost", "closed by the peer"))


async def test_session_outlives_its_token(server, monkeypatch):
    url = server.stream_url()
    enc = MediaStreamEncoder()
    ws = await _open(url)
    await _start(ws, enc)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # the token has long expired
    await _media(ws, enc, 3)
    await ws.send(json.dumps(enc.stop()))
    assert (await _closed(ws)).code == 1000
    assert len(server.registry.calls[0].frames) == 6
    # ... while a new stream on the same URL is refused now.
    with pytest.raises(websockets.InvalidStatus) as err:
        await _open(url)
    assert err.value.response.status_code == 403


@pytest.mark.parametrize("token", ["expired", "forged", "other-purpose", "garbage"])
async def test_bad_tokens_are_refused_before_the_upgrade(server, token):
    from callscribe.tokens import TokenSigner, token_signer

    value = {
        "expired": lambda: twilio_auth.issue_token(server.settings, "acme", ttl_s=-1),
        "forged": lambda: TokenSigner(b"x" * 32).issue("acme", twilio_auth.TOKEN_PURPOSE, 300),
        "other-purpose": lambda: token_signer(server.settings).issue("acme", "asapp-stream", 300),
        "garbage": lambda: "abc",
    }[token]()
    with pytest.raises(websockets.InvalidStatus) as err:
        await _open(f"ws://127.0.0.1:{server.port}{twilio_auth.STREAM_PATH}?token={value}")
    assert err.value.response.status_code == 403
    assert server.registry.connections == []


async def test_token_as_a_stream_parameter(server):
    """Twilio documents <Stream url> without a query string; the token may come as a <Parameter>."""
    token = twilio_auth.token_from_query(server.stream_url().partition("?")[2])
    bare = f"ws://127.0.0.1:{server.port}{twilio_auth.STREAM_PATH}"
    enc = MediaStreamEncoder()
    ws = await _open(bare)
    await _start(ws, enc, custom_parameters={"token": token})
    await ws.send(json.dumps(enc.stop()))
    assert (await _closed(ws)).code == 1000
    assert server.registry.connections[0]["tenant"] == "acme"
    assert "token" not in server.registry.connections[0]["metadata"]["customParameters"]
    # Without any token the stream is closed at `start`, before the registry hears of it.
    enc = MediaStreamEncoder()
    ws = await _open(bare)
    await _start(ws, enc, custom_parameters={"token": "forged"})
    assert (await _closed(ws)).code == 1008
    assert len(server.registry.connections) == 1


async def test_signature_enforced_when_an_auth_token_is_configured(tmp_path):
    with Server(tmp_path, twilio_auth_token=AUTH_TOKEN) as server:
        url = server.stream_url()
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
                        {"X-Twilio-Signature": RequestValidator("f" * 32).compute_signature(url, {})}):
            with pytest.raises(websockets.InvalidStatus) as err:
                await _open(url, additional_headers=headers)
            assert err.value.response.status_code == 403
        enc = MediaStreamEncoder()
        ws = await _open(url, additional_headers={"X-Twilio-Signature": signature})
        await _start(ws, enc)
        await _media(ws, enc, 2)
        await ws.send(json.dumps(enc.stop()))
        assert (await _closed(ws)).code == 1000
        assert len(server.registry.calls[0].frames) == 4


def _bad_inputs(enc: MediaStreamEncoder) -> dict[str, object]:
    media = enc.media(_silence(), track="inbound")
    bad_b64 = {**media, "media": {**media["media"], "payload": "@@@not-base64@@@"}}
    wrong_type = {**media, "media": {**media["media"], "timestamp": {"ms": 20}}}
    return {
        "binary": b"\x00\x01\x02",
        "not-json": "{event: media",
        "json-not-object": '["media"]',
        "wrong-type": json.dumps(wrong_type),
        "bad-base64": json.dumps(bad_b64),
        "second-start": json.dumps(MediaStreamEncoder().start(tracks=["inbound"])),
        "oversized": json.dumps({**media, "pad": "x" * (MAX_MESSAGE_BYTES + 10)}),
        "oversized-for-uvicorn": json.dumps({**media, "pad": "x" * (2 << 20)}),
    }


BEFORE_START = ["media-before-start", "wrong-media-format"]


@pytest.mark.parametrize("kind", [
    "binary", "not-json", "json-not-object", "wrong-type", "bad-base64", "second-start", "oversized",
    "oversized-for-uvicorn", *BEFORE_START,
])
async def test_a_bad_stream_closes_alone(server, kind, caplog):
    caplog.set_level(logging.INFO)
    healthy_enc = MediaStreamEncoder()
    healthy = await _open(server.stream_url())
    await _start(healthy, healthy_enc, custom_parameters={"guid": "healthy"})
    await _media(healthy, healthy_enc, 5)

    enc = MediaStreamEncoder()
    bad = await _open(server.stream_url())
    if kind == "media-before-start":
        await bad.send(json.dumps(enc.connected()))
        enc.start()
        await bad.send(json.dumps(enc.media(_silence())))
    elif kind == "wrong-media-format":
        start = enc.start(tracks=["inbound"], custom_parameters={"guid": "bad"})
        start["start"]["mediaFormat"] = {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1}
        await bad.send(json.dumps(enc.connected()))
        await bad.send(json.dumps(start))
    else:
        await _start(bad, enc, custom_parameters={"guid": "bad"})
        await _media(bad, enc, 2)
        payload = _bad_inputs(enc)[kind]
        await bad.send(payload)
    close = await _closed(bad)
    expected = {"binary": 1003, "oversized": 1009, "oversized-for-uvicorn": 1009, "second-start": 1008,
                "media-before-start": 1008}.get(kind, 1007)
    assert close is not None and close.code == expected and close.reason

    if kind not in BEFORE_START:
        bad_call = next(c for c in server.registry.calls if c.guid == "bad")
        await _until(lambda: bad_call.ends)
        assert bad_call.ends[0].startswith(("protocol error", "message too large"))

    # The healthy stream keeps going, undisturbed.
    await _media(healthy, healthy_enc, 5)
    await healthy.send(json.dumps(healthy_enc.stop()))
    assert (await _closed(healthy)).code == 1000
    healthy_call = next(c for c in server.registry.calls if c.guid == "healthy")
    assert len(healthy_call.track("inbound")) == 10 and healthy_call.ends == ["stop"]

    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the logs"
    if kind != "oversized-for-uvicorn":
        assert any("closed:" in r.getMessage() for r in caplog.records if r.name == "callscribe.ingest.twilio")


async def test_unknown_events_are_tolerated(server):
    enc = MediaStreamEncoder()
    ws = await _open(server.stream_url())
    await _start(ws, enc)
    await ws.send(json.dumps({"event": "somethingNew", "sequenceNumber": "3", "somethingNew": {}}))
    await _media(ws, enc, 2)
    await ws.send(json.dumps(enc.stop()))
    assert (await _closed(ws)).code == 1000
    assert len(server.registry.calls[0].frames) == 4
