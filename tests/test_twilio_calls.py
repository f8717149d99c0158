"""Twilio calls end to end: streamdouble (a Twilio Media Streams simulator written by others) forks
a two-party call, both tracks, to the real app with the real registry and speech model; the
control plane is the ASAPP API; transcripts are read back from the webhook and from GET messages.

The two sides are synthesised with two different voices, converted to 8 kHz mu-law by sox and
written as 8 kHz WAVs (what streamdouble streams without resampling). streamdouble paces frames in
real time and has no faster mode, so these calls are short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import websockets

from callscribe.config import load_settings
from callscribe.testing import speech
from callscribe.testing.wav import write_wav
from e2e_helpers import WebhookReceiver
from servers import running_app, wait_until

pytestmark = pytest.mark.slow

HEADERS = {"asapp-api-id": "tw", "asapp-api-secret": "tw-secret"}
HANG_GUARD_S = 120.0  # stops a broken test from hanging; never a timing assertion

SCRIPT = [
    ("agent", "Thank you for calling Northwind support. How can I help you today?"),
    ("customer", "Hello, I would like to check the status of my order please."),
    ("agent", "Of course. Your parcel left our warehouse this morning."),
    ("customer", "Wonderful, thank you very much for your help."),
]
# Words the recogniser reliably gets from each side of SCRIPT, and that the other side never says.
AGENT_WORDS = {"northwind", "support", "parcel", "warehouse", "morning"}
CUSTOMER_WORDS = {"status", "order", "wonderful", "hello"}


# Peers and fixtures -----------------------------------------------------------------------------


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def twilio_app(engine, webhook, tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys="tw:tw-secret:acme,other:o-secret:globex",
                             webhook_url=webhook.url, start_wait_for_media_s=20)
    with running_app(settings, engine=engine) as server:
        yield server


@pytest.fixture(scope="module")
def call_audio(tmp_path_factory) -> tuple[speech.Call, Path, Path]:
    """The scripted call as two 8 kHz WAVs (customer, agent) that went through telephone mu-law."""
    call = speech.build_call(SCRIPT, gap_s=1.5, voices=speech.VOICES)
    out = tmp_path_factory.mktemp("twilio-audio")
    paths = []
    for role in ("customer", "agent"):
        pcm8k = speech.mulaw_to_pcm16(speech.telephony(call.tracks[role]))
        write_wav(out / f"{role}.wav", pcm8k, 8000)
        paths.append(out / f"{role}.wav")
    return call, paths[0], paths[1]


def stream_url(server, headers=HEADERS) -> str:
    r = httpx.get(server.url + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["streamingUrl"]


def streamdouble(url: str, inbound: Path, outbound: Path, *params: str) -> subprocess.Popen:
    """`streamdouble call URL --fork --track both`, the way a user runs it."""
    exe = Path(sys.executable).with_name("streamdouble")
    cmd = [str(exe) if exe.exists() else "streamdouble", "call", url, "--fork", "--track", "both",
           "--audio", str(inbound), "--agent-audio", str(outbound), "--json", "--max-drain", "2"]
    for p in params:
        cmd += ["--param", p]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0, f"streamdouble exited {proc.returncode}: {err}\n{out}"
    report = json.loads(out)
    assert report["exit_code"] == 0
    return report


def control(server, op: str, body: dict, headers=HEADERS) -> httpx.Response:
    return httpx.post(f"{server.url}/mg-autotranscribe/v1/{op}", json=body, headers=headers, timeout=HANG_GUARD_S)


def start_body(guid: str, **extra) -> dict:
    return {"namespace": "twilio", "guid": guid, "customerId": "cust-1", "agentId": "agent-1", **extra}


def call_view(server, guid: str) -> dict | None:
    """The registry's view of a live or recently ended call (read on the app's own loop)."""

    async def get() -> dict | None:
        return server.services.registry.get_call("acme", guid, "twilio")

    return server.run(get())


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def by_role(items: list[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"customer": set(), "agent": set()}
    for role, text in items:
        out[role] |= words(text)
    return out


def assert_roles(heard: dict[str, set[str]], customer=CUSTOMER_WORDS, agent=AGENT_WORDS) -> None:
    """Most of each side's words on its own role, none on the other."""
    assert len(heard["agent"] & agent) >= len(agent) - 2, heard
    assert len(heard["customer"] & customer) >= len(customer) - 1, heard
    assert not heard["customer"] & agent, heard
    assert not heard["agent"] & customer, heard


def webhook_roles(webhook: WebhookReceiver, guid: str) -> dict[str, set[str]]:
    return by_role([(b["sender"]["role"], b["autotranscribeResponse"]["utterance"][0]["text"])
                    for b in webhook.transcripts(guid)])


def messages(server, guid: str) -> list[dict]:
    r = httpx.get(f"{server.url}/conversation/v1/conversation/messages", params={"externalId": guid}, headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.json()["items"]


# Tests -----------------------------------------------------------------------------------------------


def test_two_voices_land_on_their_roles(twilio_app, webhook, call_audio):
    """start-streaming sent before the stream connects; webhook and GET messages agree on roles."""
    call, customer_wav, agent_wav = call_audio
    guid = "tw-roles-1"
    started: list[httpx.Response] = []
    starter = threading.Thread(target=lambda: started.append(control(twilio_app, "start-streaming", start_body(guid))))
    starter.start()  # waits (start_wait_for_media_s) for the media that is not there yet
    time.sleep(0.3)
    proc = streamdouble(stream_url(twilio_app), customer_wav, agent_wav, f"guid={guid}")
    starter.join(HANG_GUARD_S)
    assert started[0].status_code == 200, started[0].text
    legs = started[0].json()["autotranscribeResponse"]
    assert set(legs) == {"customer", "agent"}
    report = finish(proc)
    assert report["frames_dropped"] == 0

    # The stream's `stop` ended the media and closed the interval; a stop reports it once.
    view = wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "ended" and v, "media end")
    assert not view["streaming"]
    stop = control(twilio_app, "stop-streaming", {"namespace": "twilio", "guid": guid})
    assert stop.status_code == 200, stop.text
    summaries = stop.json()["autotranscribeResponse"]
    for role in ("customer", "agent"):
        assert summaries[role]["streamId"] == legs[role]["streamId"]
        # Both tracks carried the whole call (silence while the other side spoke), about call.duration_s.
        assert summaries[role]["summary"]["audioDurationMs"] >= 0.9 * call.duration_s * 1000
        assert summaries[role]["summary"]["transcripts"] >= 1

    heard = wait_until(lambda: (h := webhook_roles(webhook, guid)) and
                       len(h["agent"] & AGENT_WORDS) >= 3 and len(h["customer"] & CUSTOMER_WORDS) >= 3 and h,
                       "webhooks of both roles")
    assert_roles(heard)
    for body in webhook.transcripts(guid):
        assert body["streamId"] == legs[body["sender"]["role"]]["streamId"]
        assert body["sender"]["externalId"] == {"customer": "cust-1", "agent": "agent-1"}[body["sender"]["role"]]
    items = messages(twilio_app, guid)
    assert_roles(by_role([(i["sender"]["role"], i["text"]) for i in items]))


def test_pause_resume_and_track_map(twilio_app, webhook, call_audio):
    """start-streaming after the stream connected, with trackMap inbound=agent; stop-streaming
    while the agent's second turn plays and start-streaming again before the customer's reply."""
    call, customer_wav, agent_wav = call_audio
    guid = "tw-pause-1"
    track_map = {"twilioParams": {"trackMap": {"inbound": "agent", "outbound": "customer"}}}
    # With inbound = agent, the caller's side of the simulator carries the agent's voice.
    proc = streamdouble(stream_url(twilio_app), agent_wav, customer_wav, f"guid={guid}")
    wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "connected", "the stream")
    t0 = time.monotonic()  # about when streamdouble's first frame went out (polling slack only)
    first = control(twilio_app, "start-streaming", start_body(guid, **track_map))
    assert first.status_code == 200, first.text

    turns = call.turns  # agent, customer, agent (paused), customer
    pause_at, resume_at = turns[1].end_s + 0.9, turns[2].end_s + 0.7
    time.sleep(max(0.0, t0 + pause_at - time.monotonic()))
    stop = control(twilio_app, "stop-streaming", {"namespace": "twilio", "guid": guid})
    assert stop.status_code == 200, stop.text
    time.sleep(max(0.0, t0 + resume_at - time.monotonic()))
    second = control(twilio_app, "start-streaming", start_body(guid, **track_map))
    assert second.status_code == 200, second.text
    finish(proc)

    ids = [first.json()["autotranscribeResponse"], second.json()["autotranscribeResponse"]]
    assert {r: ids[0][r]["streamId"] for r in ids[0]} != {r: ids[1][r]["streamId"] for r in ids[1]}
    wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "ended", "media end")
    heard = wait_until(lambda: (h := webhook_roles(webhook, guid)) and {"wonderful", "thank"} <= h["customer"] and h,
                       "the customer's last turn")
    # The paused turn was never transcribed; the others were, on the right roles.
    paused = {"parcel", "warehouse", "morning"}
    assert not (heard["agent"] | heard["customer"]) & paused, heard
    assert_roles(heard, agent=AGENT_WORDS - paused)
    second_ids = {ids[1][r]["streamId"] for r in ids[1]}
    assert any(b["streamId"] in second_ids for b in webhook.transcripts(guid))


def test_disconnect_mid_call_ends_it(twilio_app, webhook, call_audio):
    """The simulator dies mid-call (no stop, no close frame): the call ends, its interval closes
    with summaries, and a stop afterwards reports them once."""
    call, customer_wav, agent_wav = call_audio
    guid = "tw-drop-1"
    proc = streamdouble(stream_url(twilio_app), customer_wav, agent_wav, f"guid={guid}")
    wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "connected", "the stream")
    start = control(twilio_app, "start-streaming", start_body(guid))
    assert start.status_code == 200, start.text
    wait_until(lambda: webhook.transcripts(guid), "a first final", limit_s=HANG_GUARD_S)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=HANG_GUARD_S)

    view = wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "ended" and v, "media end")
    assert not view["streaming"]
    stop = control(twilio_app, "stop-streaming", {"namespace": "twilio", "guid": guid})
    assert stop.status_code == 200, stop.text
    for role, leg in stop.json()["autotranscribeResponse"].items():
        assert leg["streamId"] == start.json()["autotranscribeResponse"][role]["streamId"]
        assert 0 < leg["summary"]["audioDurationMs"] < call.duration_s * 1000
    again = control(twilio_app, "stop-streaming", {"namespace": "twilio", "guid": guid})
    assert again.status_code == 409 and again.json()["error"]["code"] == "409-201"
    heard = webhook_roles(webhook, guid)
    assert {"calling", "help"} <= heard["agent"] and not heard["customer"] & AGENT_WORDS, heard


def _bad_streams(url: str) -> list[tuple[str, list]]:
    """One list of frames per bad stream: after a good connected+start, the bad frame."""
    def start(guid: str, fmt: dict | None = None) -> str:
        fmt = fmt or {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZbad",
                           "start": {"streamSid": "MZbad", "callSid": "CAbad" + guid, "accountSid": "ACx",
                                     "tracks": ["inbound"], "customParameters": {"guid": guid}, "mediaFormat": fmt}})

    def media(payload: str = "/////w==", ts="0") -> str:
        return json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": "MZbad",
                           "media": {"track": "inbound", "chunk": "1", "timestamp": ts, "payload": payload}})

    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    return [
        ("binary", [connected, start("b1"), b"\x00\xff"]),
        ("not-json", [connected, start("b2"), "{oops"]),
        ("json-not-object", [connected, start("b3"), "42"]),
        ("wrong-type", [connected, start("b4"), media(ts=[1])]),
        ("bad-base64", [connected, start("b5"), media(payload="***")]),
        ("media-before-start", [connected, media()]),
        ("second-start", [connected, start("b7"), start("b7")]),
        ("wrong-media-format", [connected, start("b8", {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1})]),
        ("oversized", [connected, start("b9"), json.dumps({"event": "media", "pad": "x" * 70_000})]),
        ("unknown-event-then-stop", [connected, start("b10"), json.dumps({"event": "novel"}), media(),
                                     json.dumps({"event": "stop", "stop": {}})]),
    ]


@pytest.fixture
def all_logs(caplog):
    """caplog, plus uvicorn's error log (which does not propagate to the root logger)."""
    caplog.set_level(logging.INFO)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)
    yield caplog
    uvicorn_log.removeHandler(caplog.handler)


def test_bad_streams_close_alone_while_a_call_transcribes(twilio_app, webhook, call_audio, all_logs):
    call, customer_wav, agent_wav = call_audio
    guid = "tw-healthy-1"
    url = stream_url(twilio_app)
    proc = streamdouble(url, customer_wav, agent_wav, f"guid={guid}")
    wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "connected", "the stream")
    assert control(twilio_app, "start-streaming", start_body(guid)).status_code == 200

    async def attack() -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name, frames in _bad_streams(url):
            async with websockets.connect(stream_url(twilio_app), max_size=None) as ws:  # a URL per call
                for f in frames:
                    await ws.send(f)
                try:
                    async with asyncio.timeout(10):
                        async for message in ws:
                            raise AssertionError(f"the server sent {message!r}")
                except websockets.ConnectionClosed:
                    pass
                codes[name] = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
        return codes

    codes = asyncio.run(attack())
    assert codes == {"binary": 1003, "not-json": 1007, "json-not-object": 1007, "wrong-type": 1007,
                     "bad-base64": 1007, "media-before-start": 1008, "second-start": 1008,
                     "wrong-media-format": 1007, "oversized": 1009, "unknown-event-then-stop": 1000}
    finish(proc)
    wait_until(lambda: (v := call_view(twilio_app, guid)) and v["media"] == "ended", "media end")
    heard = wait_until(lambda: (h := webhook_roles(webhook, guid)) and {"wonderful", "thank"} <= h["customer"] and h,
                       "the whole healthy call")
    assert_roles(heard)
    # Every bad stream's own call ended; none of them is left live.
    for n in (1, 2, 3, 4, 5, 7, 9, 10):
        v = call_view(twilio_app, f"b{n}")
        assert v is not None and v["media"] == "ended", (n, v)
    assert not [r for r in all_logs.records if r.exc_info], "a traceback reached the logs"
    assert any("closed: binary frame" in r.getMessage() for r in all_logs.records)


def test_upgrade_refusals_on_the_real_app(engine, tmp_path):
    """With a Twilio auth token configured: a signature made by the twilio library over the public
    ws URL passes; a missing or wrong one, an expired token and a forged one get HTTP 403."""
    from twilio.request_validator import RequestValidator

    from callscribe.ingest import twilio_auth
    from callscribe.tokens import TokenSigner

    auth_token = "f" * 32
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys="tw:tw-secret:acme",
                             twilio_auth_token=auth_token)
    with running_app(settings, engine=engine) as server:
        url = stream_url(server)
        base = url.partition("?")[0]
        expired = f"{base}?token={twilio_auth.issue_token(server.settings, 'acme', ttl_s=-1)}"
        forged = f"{base}?token={TokenSigner(b'someone else entirely').issue('acme', twilio_auth.TOKEN_PURPOSE, 300)}"

        def sign(u: str, token: str = auth_token) -> dict[str, str]:
            return {"X-Twilio-Signature": RequestValidator(token).compute_signature(u, {})}

        async def attempt(u: str, headers: dict[str, str]) -> int:
            try:
                async with websockets.connect(u, additional_headers=headers) as ws:
                    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                    return 101
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        async def all_attempts() -> list[int]:
            return [await attempt(url, {}), await attempt(url, sign(url, "0" * 32)), await attempt(expired, sign(expired)),
                    await attempt(forged, sign(forged)), await attempt(url, sign(url))]

        assert asyncio.run(all_attempts()) == [403, 403, 403, 403, 101]
