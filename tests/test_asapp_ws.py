"""ASAPP direct WebSocket against the running app, with a `websockets` client and real speech."""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import httpx
import numpy as np
import pytest
import websockets

from callscribe.audio.codecs import ulaw_decode
from callscribe.calls.events import UtteranceEvent
from callscribe.config import load_settings
from callscribe.ingest import asapp_ws
from callscribe.testing.speech import say, silence, telephony
from servers import running_app

URL = "/autotranscribe/v1/streaming-url"
ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme,kb:sb:globex")
    with running_app(settings, engine=engine) as s:
        yield s


def stream_url(server, external_id: str | None = None) -> str:
    body = {"externalId": external_id} if external_id else None
    r = httpx.post(server.url + URL, headers=ACME, json=body)
    assert r.status_code == 200, r.text
    return r.json()["streamingUrl"]


def phone(text: str) -> bytes:
    pcm = np.concatenate([ulaw_decode(telephony(say(text))), silence(0.8, 8000)])
    return pcm.astype("<i2").tobytes()


async def recv_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 120))


async def until_final(ws) -> tuple[list[dict], dict]:
    transcripts = []
    while True:
        msg = await recv_json(ws)
        if msg["message"] == "finalResponse":
            return transcripts, msg
        assert msg["message"] == "transcript", msg
        transcripts.append(msg)


def test_streaming_url(server):
    r = httpx.post(server.url + URL, headers=ACME)
    url = r.json()["streamingUrl"]
    parsed = urllib.parse.urlparse(url)
    assert parsed.scheme == "ws" and parsed.netloc == urllib.parse.urlparse(server.url).netloc
    assert parsed.path == "/autotranscribe/v1/stream" and urllib.parse.parse_qs(parsed.query)["token"]
    assert httpx.post(server.url + URL).status_code == 401
    assert httpx.post(server.url + URL, headers=ACME, json={"externalId": 5}).json()["error"]["code"] == "400-01"
    assert httpx.post(server.url + URL, headers=ACME, content=b"{oops").json()["error"]["code"] == "400-01"


def test_bad_token_is_refused_with_1008(server):
    async def go(url):
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd

    good = stream_url(server)
    for url in (server.ws_url + "/autotranscribe/v1/stream", good + "x", good.replace("token=", "token=A"),
                server.ws_url + "/autotranscribe/v1/stream?token=" + "a" * 5000):
        rcvd = asyncio.run(go(url))
        assert rcvd.code == 1008 and "token" in rcvd.reason


def test_full_session_words_summary_and_tokens(server):
    audio = phone("Thank you for calling Northwind support. How can I help you today?")

    async def go():
        async with websockets.connect(stream_url(server, "conv-full")) as ws:
            await ws.send(json.dumps({"message": "startStream", "sender": {"role": "agent", "externalId": "A-9"},
                                      "detailedToken": True, "redactionOutput": "unredacted"}))
            for i in range(0, len(audio), 3200):  # 100 ms frames, faster than real time
                await ws.send(audio[i:i + 3200])
            start = await recv_json(ws)
            await ws.send(json.dumps({"message": "finishStream"}))
            transcripts, final = await until_final(ws)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return start, transcripts, final

    start, transcripts, final = asyncio.run(go())
    assert start["message"] == "startResponse" and start["status"] == {"code": "1000", "description": "OK"}
    assert start["streamID"]
    text = " ".join(t["utterance"][0]["text"] for t in transcripts).lower()
    assert "calling" in text and "support" in text and "help you" in text, text
    tokens = [tok for t in transcripts for tok in t["utterance"][0]["tokens"]]
    assert tokens and all({"content", "start", "end"} <= set(tok) for tok in tokens)
    assert any(tok.get("punctuationAfter") for tok in tokens)
    assert all(t["start"] <= t["end"] for t in transcripts)
    assert final["streamId"] == start["streamID"] and final["status"]["code"] == "1000"
    summary = final["summary"]
    assert summary["audioDurationMs"] == len(audio) // 16
    assert summary["totalAudioBytes"] == 16 * summary["audioDurationMs"]  # whole ms of 16-bit 8 kHz audio
    assert len(audio) - 16 < summary["totalAudioBytes"] <= len(audio)
    assert summary["transcripts"] == len(transcripts)


def _session(server, first: list, url: str | None = None) -> dict:
    """Send these messages; the finalResponse (or the close) that follows."""

    async def go():
        async with websockets.connect(url or stream_url(server)) as ws:
            for m in first:
                await ws.send(m if isinstance(m, (bytes, str)) else json.dumps(m))
            while True:
                msg = await recv_json(ws)
                if msg["message"] == "finalResponse":
                    return msg

    return asyncio.run(go())


START = {"message": "startStream", "sender": {"role": "customer", "externalId": "C-1"}}


@pytest.mark.parametrize("messages,code", [
    ([b"\x00\x01" * 100], "4056"),  # audio before startStream
    (["{not json"], "4040"),
    (['["startStream"]'], "4040"),
    ([{"message": "dance"}], "4040"),
    ([{"message": "startStream"}], "4040"),  # sender missing
    ([{**START, "sender": {"role": "robot", "externalId": "x"}}], "4040"),
    ([{**START, "redactionOutput": "some"}], "4040"),
    ([{**START, "detailedToken": True}], "4040"),  # tokens are never redacted
    ([{**START, "language": "xx-YY"}], "4050"),
    ([{**START, "encoding": "OPUS"}], "4051"),
    ([{**START, "samplingRate": 16000}], "4053"),
    ([{"message": "finishStream"}], "4056"),
    ([START, START], "4056"),
])
def test_refusals(server, messages, code):
    msg = _session(server, messages)
    assert msg["status"]["code"] == code, msg
    assert set(msg["summary"]) == {"totalAudioBytes", "audioDurationMs", "streamingSeconds", "transcripts"}


def test_idle_timeout_4083(server, monkeypatch):
    monkeypatch.setattr(asapp_ws, "IDLE_TIMEOUT_S", 0.5)
    msg = _session(server, [START, b"\x00\x00" * 800])
    assert msg["status"]["code"] == "4083" and msg["summary"]["audioDurationMs"] == 100


def test_messages_before_start_do_not_hold_the_socket_open(server, monkeypatch):
    """The deadline to a startStream is absolute: vocabulary messages do not extend it."""
    monkeypatch.setattr(asapp_ws, "IDLE_TIMEOUT_S", 1.0)
    vocab = {"message": "updateVocabulary", "phrases": [{"phrase": "x" * 200}]}

    async def go():
        async with websockets.connect(stream_url(server)) as ws:
            answers = []
            for _ in range(30):
                try:
                    await ws.send(json.dumps(vocab))
                except websockets.ConnectionClosed:
                    break  # what the server said before closing is still to be read
                await asyncio.sleep(0.1)
            try:
                while True:
                    answers.append(await recv_json(ws))
            except websockets.ConnectionClosed:
                return answers, None

    answers, _ = asyncio.run(go())
    assert answers[-1]["message"] == "finalResponse" and answers[-1]["status"]["code"] == "4083"
    assert len(answers) < 30


def test_vocabulary_odd_frames_and_garbage_do_not_hurt(server):
    audio = phone("I was charged twice for the same month of service.")

    async def go():
        async with websockets.connect(stream_url(server)) as ws:
            await ws.send(json.dumps({"message": "updateVocabulary",
                                      "phrases": [{"phrase": "Northwind", "soundsLike": ["north wind"],
                                                   "category": "company"}]}))
            vocab = await recv_json(ws)
            await ws.send(json.dumps({"message": "updateVocabulary", "phrases": "nope"}))
            bad_vocab = await recv_json(ws)
            await ws.send(json.dumps(START))
            assert (await recv_json(ws))["message"] == "startResponse"
            i, k, sizes = 0, 0, (1, 333, 3201, 7, 4000)  # odd sizes: an odd byte waits for the next frame
            while i < len(audio):
                await ws.send(audio[i:i + sizes[k % len(sizes)]])
                i += sizes[k % len(sizes)]
                k += 1
            await ws.send(json.dumps({"message": "finishStream"}))
            transcripts, final = await until_final(ws)
            return vocab, bad_vocab, transcripts, final

    vocab, bad_vocab, transcripts, final = asyncio.run(go())
    # No phrase biasing in the engine: a valid update is answered with the limit code, never an OK.
    assert vocab["message"] == "vocabularyResponse" and vocab["status"]["code"] == "4084"
    assert "not applied" in vocab["status"]["description"]
    assert bad_vocab["status"]["code"] == "4091"
    assert final["summary"]["audioDurationMs"] == len(audio) // 16
    text = " ".join(t["utterance"][0]["text"] for t in transcripts).lower()
    assert "charged twice" in text, text
    # A connection that sends garbage and vanishes does not take the server with it.

    async def rude():
        async with websockets.connect(stream_url(server)) as ws:
            await ws.send(json.dumps(START))
            await ws.send(b"\x01")
            await ws.send(b"\xff" * 4097)

    asyncio.run(rude())
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_same_external_id_is_one_call_with_two_legs(server, wait_until):
    url = stream_url(server, "conv-pair")
    url2 = stream_url(server, "conv-pair")
    events: list = []

    async def subscribe():
        server.services.bus.subscribe(lambda e: events.append(e) if e.call.guid == "conv-pair" else None)

    server.run(subscribe())

    async def go():
        async with websockets.connect(url) as a, websockets.connect(url2) as b:
            await a.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C"}}))
            await b.send(json.dumps({"message": "startStream", "sender": {"role": "agent", "externalId": "A"}}))
            ra, rb = await recv_json(a), await recv_json(b)
            snap = server.services.registry.get_call("acme", "conv-pair")
            for ws in (a, b):
                await ws.send(b"\x00\x00" * 1600)
                await ws.send(json.dumps({"message": "finishStream"}))
            fa, fb = (await until_final(a))[1], (await until_final(b))[1]
            return ra, rb, snap, fa, fb

    ra, rb, snap, fa, fb = asyncio.run(go())
    assert ra["streamID"] != rb["streamID"]
    assert snap["namespace"] == "autotranscribe" and {leg["role"] for leg in snap["legs"]} == {"customer", "agent"}
    assert fa["summary"]["audioDurationMs"] == fb["summary"]["audioDurationMs"] == 200
    wait_until(lambda: any(getattr(e, "state", None) == "media-ended" for e in events), "the call to end")
    assert len({e.call.call_id for e in events}) == 1
    assert server.services.registry.get_call("globex", "conv-pair") is None  # tenants do not mix
    assert not any(isinstance(e, UtteranceEvent) for e in events)  # silence says nothing


from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
                     max_leaves=8)
_messages = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=30),
    _json.map(json.dumps),
    st.fixed_dictionaries({"message": st.sampled_from(["startStream", "finishStream", "updateVocabulary", "x"])},
                          optional={"sender": _json, "language": _json, "samplingRate": _json, "encoding": _json,
                                    "phrases": _json, "redactionOutput": _json}).map(json.dumps),
)


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(_messages, min_size=1, max_size=4))
def test_fuzz_frames_never_break_the_server(server, frames):
    async def go():
        async with websockets.connect(stream_url(server)) as ws:
            for f in frames:
                try:
                    await ws.send(f)
                except websockets.ConnectionClosed:
                    break
            await ws.close()

    asyncio.run(go())
    assert httpx.get(server.url + "/healthz").status_code == 200
