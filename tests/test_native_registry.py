"""A call driven through the real call registry of a running app reaches the store, the webhook, the
messages API, the native API and the events WebSocket.

The speech scheduler is a scripted stand-in (each leg's pipeline emits one final, "heard N samples",
when its interval closes) so that this test checks the registry-to-delivery seam, not the engine.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future

import httpx
import numpy as np
from standardwebhooks.webhooks import Webhook
from websockets.sync.client import connect

from callscribe.asr.types import TranscriptEvent
from callscribe.calls.leg import StreamParams
from callscribe.ingest.twilio import track_specs
from test_native import ACME, events_url, receive_until_closed
from test_webhook import Receiver, new_secret


class ScriptedPipeline:
    def __init__(self, on_event, origin_ms: int) -> None:
        self.on_event = on_event
        self.origin_ms = origin_ms
        self.samples = 0
        self.backlog_ms = 0.0

    @property
    def position_ms(self) -> int:
        return self.origin_ms + self.samples // 8

    def feed(self, pcm, rate) -> None:
        self.samples += len(pcm)

    def close(self) -> Future:
        fut: Future = Future()

        def finish() -> None:  # from another thread, as the engine's workers do
            if self.samples:
                self.on_event(TranscriptEvent("final", 0, self.origin_ms, self.position_ms,
                                              f"heard {self.samples} samples"))
            fut.set_result(None)

        threading.Thread(target=finish).start()
        return fut


class ScriptedScheduler:
    def can_admit(self, extra_legs: int = 1) -> bool:
        return True

    def open_leg(self, on_event, *, origin_ms: int = 0, partials: bool = True, on_settled=None) -> ScriptedPipeline:
        return ScriptedPipeline(on_event, origin_ms)

    def stop(self, drain_s: float = 5.0) -> None:
        pass


def pcm(ms: int) -> np.ndarray:
    return np.full(8 * ms, 1000, dtype=np.int16)


def test_a_registry_call_is_stored_delivered_and_served(start_app, wait_until):
    secret = new_secret()
    hook = Receiver().start()
    try:
        app = start_app(webhook_url=hook.url, webhook_secret=secret)
        wait_until(lambda: app.services.ready.is_set(), "the stand-in engine")
        old, app.services.scheduler = app.services.scheduler, ScriptedScheduler()
        old.stop()
        registry = app.services.registry

        media = app.run(registry.media_connected(tenant="acme", namespace="twilio", guid="CA-real",
                                                 tracks=track_specs(["inbound", "outbound"]), source="test"))
        app.run(media.audio("inbound", pcm(300), 8000))  # before the start: counted, never transcribed
        params = StreamParams(redaction_output="unredacted", audio_recording_allowed=True,
                              external_ids={"customer": "cust-9", "agent": "agent-9"})
        app.run(registry.start_streaming("acme", "twilio", "CA-real", params))
        app.run(media.audio("inbound", pcm(1000), 8000))
        app.run(media.audio("outbound", pcm(500), 8000))
        app.run(registry.stop_streaming("acme", "twilio", "CA-real"))
        app.run(media.end("hangup"))
        app.flush()

        wait_until(lambda: len(hook.delivered()) == 2, "two webhooks")
        hooks = {Webhook(secret).verify(b, h)["sender"]["role"]: json.loads(b) for h, b in hook.delivered()}
        assert hooks["customer"]["autotranscribeResponse"]["utterance"] == [{"text": "heard 8000 samples"}]
        assert hooks["customer"]["sender"] == {"externalId": "cust-9", "role": "customer"}
        assert hooks["agent"]["externalConversationId"] == "CA-real"

        detail = httpx.get(app.url + "/v1/calls/CA-real", headers=ACME).json()
        streams = {s["role"]: s for s in detail["streams"]}
        assert streams["customer"]["summary"]["totalAudioBytes"] == 16000
        assert streams["customer"]["summary"]["transcripts"] == 1
        assert streams["agent"]["summary"]["audioDurationMs"] == 500
        assert streams["customer"]["streamId"] == hooks["customer"]["streamId"]
        assert streams["customer"]["audioRecordingAllowed"] is True
        assert detail["state"] == "ended" and detail["active"] is True  # still held by the registry
        assert {r["role"] for r in detail["recordings"]} == {"customer", "agent"}
        for rec in detail["recordings"]:
            assert httpx.get(app.url + rec["url"], headers=ACME).status_code == 200

        listed = httpx.get(app.url + "/v1/calls", headers=ACME).json()["calls"]
        assert [c["guid"] for c in listed] == ["CA-real"] and listed[0]["live"]["call_id"] == detail["callId"]

        items = httpx.get(app.url + "/conversation/v1/conversation/messages", params={"externalId": "CA-real"},
                          headers=ACME).json()["items"]
        assert sorted(i["text"] for i in items) == ["heard 4000 samples", "heard 8000 samples"]

        with connect(events_url(app, "CA-real")) as ws:
            got, code, _ = receive_until_closed(ws)
        assert [e["seq"] for e in got] == list(range(1, len(got) + 1)) and code == 1000
        assert [e["state"] for e in got if e["type"] == "state"] == [
            "media-connected", "streaming-started", "streaming-stopped", "recording-saved", "recording-saved",
            "media-ended"]
    finally:
        hook.stop()
