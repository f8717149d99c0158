"""A crash loses nothing: `callscribe serve` killed with SIGKILL in the middle of a call whose finals
could not be delivered yet; the next start closes the call as interrupted and delivers every stored
final to the webhook, once per webhook-id."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import httpx
import numpy as np
import websockets

from callscribe.audio.codecs import ulaw_decode
from callscribe.testing.speech import say, silence, telephony
from e2e_helpers import WebhookReceiver
from servers import wait_until
from test_serve import free_port, serve_env, wait_for

KEY = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


def serve(tmp_path, port: int, hook: WebhookReceiver) -> subprocess.Popen:
    env = serve_env(tmp_path, CALLSCRIBE_API_KEYS="ka:sa:acme", CALLSCRIBE_WEBHOOK_URL=hook.url,
                    CALLSCRIBE_WEBHOOK_SECRET="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    proc = subprocess.Popen([sys.executable, "-m", "callscribe", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(f"http://127.0.0.1:{port}/readyz", 200, proc)
    return proc


def test_kill_9_mid_call_then_restart_delivers_every_final_once(tmp_path):
    hook = WebhookReceiver()
    hook.accept.clear()  # the receiver is down: finals wait in the outbox
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, port, hook)
    sentences = ["My order number is seven four two.", "I would like to change the delivery address."]
    try:
        url = httpx.post(base + "/autotranscribe/v1/streaming-url", headers=KEY,
                         json={"externalId": "crash-1"}).json()["streamingUrl"]

        async def talk() -> int:
            ws = await websockets.connect(url)
            await ws.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C"}}))
            assert json.loads(await ws.recv())["message"] == "startResponse"
            heard = 0
            for text in sentences:
                pcm = np.concatenate([ulaw_decode(telephony(say(text))), silence(1.0, 8000)]).astype("<i2")
                await ws.send(pcm.tobytes())
                while json.loads(await asyncio.wait_for(ws.recv(), 120))["message"] != "transcript":
                    pass
                heard += 1
            return heard  # the socket is left open: the call is live when the server dies

        assert asyncio.run(talk()) == 2
        stored = wait_until(lambda: len(httpx.get(base + "/conversation/v1/conversation/messages?externalId=crash-1",
                                                  headers=KEY).json().get("items", [])) >= 2 and True,
                            "both finals stored")
        assert stored and hook.refused >= 1 and not hook.bodies
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

        hook.accept.set()
        proc = serve(tmp_path, port, hook)
        items = httpx.get(base + "/conversation/v1/conversation/messages?externalId=crash-1", headers=KEY).json()
        wait_until(lambda: len(hook.bodies) >= len(items["items"]), "every stored final delivered")
        assert len(hook.ids) == len(set(hook.ids)) == len(items["items"])  # each webhook-id exactly once
        assert {b["autotranscribeResponse"]["utterance"][0]["text"] for b in hook.bodies} == \
            {i["text"] for i in items["items"]}
        call = httpx.get(base + "/v1/calls/crash-1", headers=KEY).json()
        assert call["state"] == "interrupted" and call["endedAt"]
        assert all(s["stoppedAt"] for s in call["streams"])
    finally:
        if proc.poll() is None:
            proc.kill()
        hook.close()
