"""The shared edge, used as a new protocol would use it.

`ConferenceAdapter` below is a whole media adapter written only against ingest/base.py and the
registry's media contract: a made-up conference protocol (a JSON `open` naming the participants,
binary frames of 8 kHz L16 prefixed with the participant's index, a JSON `close`). It carries a call
with three participants through the registry, the real engine, redaction, the store and the
webhooks of the running app.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from fastapi import APIRouter, WebSocket

from callscribe.audio.codecs import ulaw_decode
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MediaCall, Participant, TrackSpec
from callscribe.config import load_settings
from callscribe.ingest.base import AdapterError, Close, WebSocketAdapter, json_object, obj, run_session, string
from callscribe.testing.speech import say, silence, telephony
from e2e_helpers import WebhookReceiver
from servers import running_app


class ConferenceAdapter(WebSocketAdapter):
    name = "conference"

    def __init__(self, services: Any):
        self.services = services
        self.media: MediaCall | None = None
        self.tracks: list[str] = []

    @property
    def label(self) -> str:
        return self.media.guid if self.media else "not open"

    async def on_text(self, text: str) -> bool:
        msg = json_object(text)
        if "close" in msg:
            return True
        if self.media is not None:
            raise AdapterError("second open", Close.POLICY)
        opened = obj(msg, "open")
        guid = string(opened, "call", required=True, where="open.") or ""
        people = opened.get("participants")
        if not isinstance(people, list) or not people:
            raise AdapterError("'open.participants' must be a non-empty list")
        specs = [TrackSpec(f"p{i}", Participant(string(p, "id", required=True) or "", "attendee",
                                                 name=string(p, "name") or ""))
                 for i, p in enumerate(people)]
        self.tracks = [s.name for s in specs]
        registry = self.services.registry
        self.media = await registry.media_connected(tenant="acme", namespace="conference", guid=guid, tracks=specs,
                                                    source="test")
        await registry.start_streaming("acme", "conference", guid, StreamParams(surface="asapp"))
        self.started = True
        return False

    async def on_bytes(self, data: bytes) -> bool:
        if self.media is None or not data or data[0] >= len(self.tracks):
            raise AdapterError("audio before open or for an unknown participant", Close.POLICY)
        pcm = np.frombuffer(data[1:len(data) - (len(data) - 1) % 2], dtype="<i2")
        await self.media.audio(self.tracks[data[0]], pcm, 8000)
        return False

    async def end(self, reason: str) -> None:
        if self.media is not None:
            await self.media.end(reason)


router = APIRouter()


@router.websocket("/test/conference")
async def conference(ws: WebSocket) -> None:
    await ws.accept()
    await run_session(ws, ConferenceAdapter(ws.app.state.services))


PEOPLE = [("ann", "Ann Lee", "Good morning everyone, thanks for joining the planning meeting."),
          ("bob", "Bob Stone", "My card number is 4111 1111 1111 1111 for the travel booking."),
          ("cat", "Cat Diaz", "The budget review is scheduled for next Tuesday afternoon.")]


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_three_participants_through_the_whole_path(tmp_path_factory, engine, webhook, wait_until):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             webhook_url=webhook.url)
    audio = [np.concatenate([ulaw_decode(telephony(say(text))), silence(1.0, 8000)]).astype("<i2").tobytes()
             for _, _, text in PEOPLE]
    with running_app(settings, engine=engine) as server:
        server.app.include_router(router)

        async def call() -> None:
            async with websockets.connect(f"{server.ws_url}/test/conference") as ws:
                await ws.send(json.dumps({"open": {"call": "conf-1", "participants": [
                    {"id": pid, "name": name} for pid, name, _ in PEOPLE]}}))
                for i, pcm in enumerate(audio):  # one after another, in 100 ms frames
                    for k in range(0, len(pcm), 1600):
                        await ws.send(bytes([i]) + pcm[k:k + 1600])
                        await asyncio.sleep(0.01)
                await ws.send(json.dumps({"close": True}))
                await ws.wait_closed()

        asyncio.run(call())
        hooks = wait_until(lambda: len({b["participant"] for b in webhook.transcripts("conf-1")}) == 3
                           and webhook.transcripts("conf-1"), "webhooks of all three participants")
        said = {pid: " ".join(b["autotranscribeResponse"]["utterance"][0]["text"] for b in hooks
                              if b["participant"] == pid).lower() for pid, _, _ in PEOPLE}
        assert "planning meeting" in said["ann"] and "budget" in said["cat"], said
        assert "card" in said["bob"] and "4111" not in said["bob"] and "#" in said["bob"], said
        assert {b["sender"]["role"] for b in hooks} == {"attendee"}

        server.flush()
        detail = httpx.get(f"{server.url}/v1/calls/conf-1", headers={"asapp-api-id": "ka", "asapp-api-secret": "sa"})
        streams = detail.json()["streams"]
        assert {(s["participant"], s["participantName"]) for s in streams} == {(p, n) for p, n, _ in PEOPLE}
        assert all(s["summary"]["transcripts"] >= 1 for s in streams)
        items = httpx.get(f"{server.url}/conversation/v1/conversation/messages?externalId=conf-1",
                          headers={"asapp-api-id": "ka", "asapp-api-secret": "sa"}).json()["items"]
        assert "4111" not in json.dumps(items) and len(items) == len(hooks)
