"""SIGTERM during a call: the server refuses new legs, finishes the utterance in progress, tells a
direct-WebSocket client 5001 "service shutting down", exits cleanly, and the next start serves every
utterance spoken before the signal."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import numpy as np
import websockets

from callscribe.audio.codecs import ulaw_decode
from callscribe.testing.speech import say, silence, telephony
from e2e_helpers import WebhookReceiver
from test_restart import KEY, serve
from test_serve import free_port


def test_sigterm_mid_utterance_keeps_it_and_says_5001(tmp_path):
    hook = WebhookReceiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, hook)
    try:
        url = httpx.post(base + "/autotranscribe/v1/streaming-url", headers=KEY,
                         json={"externalId": "drain-1"}).json()["streamingUrl"]
        first = np.concatenate([ulaw_decode(telephony(say("Please cancel my subscription today."))),
                                silence(1.0, 8000)]).astype("<i2")
        # No silence after it: the utterance is still open when the signal comes.
        second = ulaw_decode(telephony(say("I moved to another city last month."))).astype("<i2")

        async def talk() -> list[dict]:
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C"}}))
                assert json.loads(await ws.recv())["message"] == "startResponse"
                await ws.send(first.tobytes())
                while json.loads(await asyncio.wait_for(ws.recv(), 120))["message"] != "transcript":
                    pass
                await ws.send(second.tobytes())
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                said = []
                try:
                    while True:
                        said.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
                except websockets.ConnectionClosed:
                    return said

        after = asyncio.run(talk())
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert after[-1]["message"] == "finalResponse" and after[-1]["status"]["code"] == "5001"
        assert any("city" in m["utterance"][0]["text"].lower() for m in after if m["message"] == "transcript")

        proc = serve(tmp_path, port, hook)
        items = httpx.get(base + "/conversation/v1/conversation/messages?externalId=drain-1", headers=KEY).json()
        text = " ".join(i["text"] for i in items["items"]).lower()
        assert "subscription" in text and "city" in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
        hook.close()
