"""The Deepgram-compatible listen API against the running app, with the official `deepgram-sdk`
client pointed at callscribe (its environment's base URLs) and real synthesised speech."""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import threading
from functools import partial

import httpx
import numpy as np
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from deepgram import AsyncDeepgramClient, DeepgramClient
from deepgram.core.api_error import ApiError as DeepgramApiError
from deepgram.environment import DeepgramClientEnvironment

from callscribe.config import load_settings
from callscribe.ingest import listen as listen_ingest
from callscribe.testing.speech import CALL_SCRIPTS, build_call, say, silence, telephony
from callscribe.testing.wav import write_wav
from servers import HANG_GUARD_S, running_app

KEY = "ka:sa"
NATIVE = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
PACE = 4.0  # audio goes this many times faster than real time (partials still come)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def file_server(files):
    """A local file server: the pre-recorded API's {"url": ...} may fetch from it."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(files))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine, file_server):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             listen_url_prefixes=file_server + "/")
    with running_app(settings, engine=engine) as s:
        yield s


def environment(server) -> DeepgramClientEnvironment:
    return DeepgramClientEnvironment(base=server.url, production=server.ws_url, agent=server.ws_url,
                                     agent_rest=server.url)


def two_party() -> tuple[bytes, list[str]]:
    """The first four turns of a scripted call as 16 kHz 2-channel linear16 (agent left, customer right)."""
    call = build_call(CALL_SCRIPTS[0][:4])
    frames = np.stack([call.tracks["agent"], call.tracks["customer"]], axis=1)
    frames = np.concatenate([frames, np.zeros((16000 * 2, 2), dtype=np.int16)])
    return frames.astype("<i2").tobytes(), [call.text_of("agent"), call.text_of("customer")]


async def stream(socket, audio: bytes, bytes_per_s: int, *, chunk_s: float = 0.1, then: list | None = None) -> list:
    """Send `audio` at PACE times real time, then the control messages in `then`; every message until close."""
    received: list = []

    async def reader():
        async for message in socket:
            received.append(message)

    task = asyncio.create_task(reader())
    step = int(bytes_per_s * chunk_s)
    step -= step % 4
    for i in range(0, len(audio), step):
        await socket.send_media(audio[i:i + step])
        await asyncio.sleep(chunk_s / PACE)
    sends = {"Finalize": socket.send_finalize, "KeepAlive": socket.send_keep_alive,
             "CloseStream": socket.send_close_stream}
    for message in then or ["CloseStream"]:
        await sends[message]()
    await asyncio.wait_for(task, HANG_GUARD_S)
    return received


def words_of(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


def by_type(received: list, kind: str) -> list:
    return [m for m in received if getattr(m, "type", None) == kind]


def test_two_channel_linear16_interims_finals_vad_and_utterance_end(server):
    audio, texts = two_party()

    async def go():
        client = AsyncDeepgramClient(api_key=KEY, environment=environment(server))
        async with client.listen.v1.connect(
                model="nova-3", encoding="linear16", sample_rate=16000, channels=2, multichannel="true",
                interim_results="true", vad_events="true", utterance_end_ms=1000, punctuate="true",
                smart_format="true", tag="dg-two-party", keyterm="Northwind") as socket:
            return await stream(socket, audio, 16000 * 2 * 2)

    received = asyncio.run(go())
    results = by_type(received, "Results")
    finals = [r for r in results if r.is_final]
    assert any(not r.is_final for r in results), "no interim results"
    for channel, text in enumerate(texts):
        heard = " ".join(r.channel.alternatives[0].transcript for r in finals if r.channel_index == [channel, 2])
        assert len(words_of(text) & words_of(heard)) >= 0.6 * len(words_of(text)), (channel, heard)
        mine = [r for r in finals if r.channel_index[0] == channel and r.channel.alternatives[0].transcript]
        assert mine and all(r.speech_final and not r.from_finalize for r in mine)
        assert [m for m in by_type(received, "SpeechStarted") if m.channel[0] == channel]
        ends = [m for m in by_type(received, "UtteranceEnd") if m.channel[0] == channel]
        assert ends and all(e.last_word_end > 0 for e in ends)
    words = [w for r in finals for w in r.channel.alternatives[0].words]
    assert words and all(w.start <= w.end and 0 <= w.confidence <= 1 and w.punctuated_word for w in words)
    assert finals[0].metadata.model_info.name == "nova-3" and finals[0].metadata.request_id
    metadata = received[-1]
    assert metadata.type == "Metadata" and metadata.channels == 2
    assert abs(metadata.duration - len(audio) / 64000) < 0.05
    assert any(w["parameter"] == "keyterm" for w in metadata.warnings)

    # The connection is a call like any other: stored per participant and shown by the native API.
    detail = httpx.get(server.url + "/v1/calls/dg-two-party", headers=NATIVE).json()
    assert detail["namespace"] == "deepgram"
    assert {s["participant"] for s in detail["streams"]} == {"ch0", "ch1"}


def test_mono_mulaw_8k_finalize_and_close_stream(server):
    text = "Thank you for calling customer support. I can help you with your order today."
    audio = telephony(np.concatenate([silence(0.3), say(text)]))  # no silence after: only Finalize ends it

    async def go():
        client = AsyncDeepgramClient(api_key=KEY, environment=environment(server))
        async with client.listen.v1.connect(model="general", encoding="mulaw", sample_rate=8000,
                                            interim_results="false", punctuate="true") as socket:
            return await stream(socket, audio, 8000,
                                then=["Finalize", "KeepAlive", "Finalize", "CloseStream"])

    received = asyncio.run(go())
    results = by_type(received, "Results")
    assert results and all(r.is_final for r in results) and all(r.channel_index == [0, 1] for r in results)
    flushed = [r for r in results if r.from_finalize]
    assert flushed and not any(r.speech_final for r in flushed)
    heard = " ".join(r.channel.alternatives[0].transcript for r in results)
    assert {"calling", "support", "order"} <= words_of(heard), heard
    # The second Finalize had nothing left to flush: an empty from_finalize result says so.
    assert flushed[-1].channel.alternatives[0].transcript == ""
    assert received[-1].type == "Metadata" and received[-1].channels == 1


def test_redact_pci_masks_the_card_number(server):
    text = "Sure, my card number is four one one one, one one one one, one one one one, one one one one."
    audio = np.concatenate([silence(0.3), say(text), silence(1.5)]).astype("<i2").tobytes()

    async def go():
        client = AsyncDeepgramClient(api_key=KEY, environment=environment(server))
        async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000, redact="pci",
                                            punctuate="true", interim_results="true", endpointing="false") as socket:
            return await stream(socket, audio, 32000)

    received = asyncio.run(go())
    results = by_type(received, "Results")
    finals = " ".join(r.channel.alternatives[0].transcript for r in results if r.is_final)
    assert "card" in finals.lower() and "#" in finals, finals
    every = json.dumps([r.dict() for r in results])
    assert "1111" not in every and "4111" not in every
    assert not any(r.speech_final for r in results)  # endpointing=false: speech_final is never set


def test_wrong_key_bad_query_and_token_subprotocol(server):
    async def connect(**kwargs):
        client = AsyncDeepgramClient(api_key=kwargs.pop("key", KEY), environment=environment(server))
        async with client.listen.v1.connect(model="nova-3", **kwargs):
            return True

    with pytest.raises(DeepgramApiError) as refused:
        asyncio.run(connect(key="ka:wrong"))
    assert refused.value.status_code == 401
    with pytest.raises(DeepgramApiError) as refused:
        asyncio.run(connect(language="fr"))
    assert refused.value.status_code == 400
    with pytest.raises(DeepgramApiError) as refused:
        asyncio.run(connect(callback="https://elsewhere.example/hook"))
    assert refused.value.status_code == 400

    async def bearer():  # the SDK's access-token form: `Authorization: bearer id:secret`
        client = AsyncDeepgramClient(access_token=KEY, environment=environment(server))
        async with client.listen.v1.connect(model="nova-3", encoding="mulaw", sample_rate=8000) as socket:
            await socket.send_close_stream()
            return await socket.recv()

    assert asyncio.run(bearer()).type == "Metadata"

    async def raw(query: str, **kwargs):
        try:
            async with websockets.connect(server.ws_url + "/v1/listen" + query, **kwargs) as ws:
                await ws.send(json.dumps({"type": "CloseStream"}))
                return json.loads(await ws.recv())
        except websockets.InvalidStatus as exc:
            return exc.response

    answer = asyncio.run(raw("?model=nova-3&dance=yes", additional_headers={"Authorization": f"Token {KEY}"}))
    body = json.loads(answer.body)
    assert answer.status_code == 400 and body["err_code"] == "Bad Request" and "dance" in body["err_msg"]
    assert answer.headers["dg-request-id"] == body["request_id"]
    r = httpx.get(server.url + "/v1/listen", headers={"Authorization": f"Token {KEY}"})
    assert r.status_code == 405 and set(r.json()) == {"err_code", "err_msg", "request_id"}
    answer = asyncio.run(raw("", additional_headers={"Authorization": "Token ka:nope"}))
    assert answer.status_code == 401 and json.loads(answer.body)["err_code"] == "INVALID_AUTH"
    metadata = asyncio.run(raw("?encoding=linear16&sample_rate=16000", subprotocols=["token", "ka.sa"]))
    assert metadata["type"] == "Metadata" and metadata["duration"] == 0


def test_a_tag_names_one_call_and_never_blocks_another(server):
    async def connect():
        async with websockets.connect(server.ws_url + "/v1/listen?encoding=mulaw&sample_rate=8000&tag=billing",
                                      additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send(json.dumps({"type": "CloseStream"}))
            return json.loads(await ws.recv())

    first, second = asyncio.run(connect()), asyncio.run(connect())
    calls = {c["guid"]: c for c in httpx.get(server.url + "/v1/calls", headers=NATIVE).json()["calls"]}
    assert calls["billing"]["callId"] == first["callscribe_call_id"]
    assert calls[second["request_id"]]["callId"] == second["callscribe_call_id"]  # "billing" was taken


def test_no_audio_for_the_timeout_closes_with_net_0001(server, monkeypatch):
    monkeypatch.setattr(listen_ingest, "IDLE_TIMEOUT_S", 1.0)

    async def go(keepalives: int):
        async with websockets.connect(server.ws_url + "/v1/listen?encoding=mulaw&sample_rate=8000",
                                      additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            for _ in range(keepalives):  # each KeepAlive restarts the timeout
                await asyncio.sleep(0.4)
                await ws.send(json.dumps({"type": "KeepAlive"}))
            await ws.send(json.dumps({"type": "Dance"}))
            error = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), HANG_GUARD_S)
            return error, closed.value.rcvd

    error, rcvd = asyncio.run(go(keepalives=4))
    assert error["type"] == "Error" and error["variant"] == "SchemaError"
    assert rcvd.code == 1011 and rcvd.reason.startswith("NET-0001")


def test_prerecorded_file_and_url(server, files):
    call = build_call(CALL_SCRIPTS[1][:2])
    stereo = np.stack([call.tracks["agent"], call.tracks["customer"]], axis=1)
    write_wav(files / "call.wav", stereo, 16000)
    client = DeepgramClient(api_key=KEY, environment=environment(server))

    answer = client.listen.v1.media.transcribe_file(request=(files / "call.wav").read_bytes(), model="nova-3",
                                                    multichannel=True, punctuate=True, utterances=True)
    channels = answer.results.channels
    assert len(channels) == 2 and answer.metadata.channels == 2
    for channel, role in enumerate(("agent", "customer")):
        heard = channels[channel].alternatives[0].transcript
        expected = words_of(call.text_of(role))
        assert len(expected & words_of(heard)) >= 0.6 * len(expected), heard
        assert channels[channel].alternatives[0].words
    assert {u.channel for u in answer.results.utterances} == {0, 1}

    mixed = client.listen.v1.media.transcribe_url(url=file_server_url(server, "call.wav"), model="nova-3")
    assert len(mixed.results.channels) == 1
    heard = words_of(mixed.results.channels[0].alternatives[0].transcript)
    assert {"billing", "bill"} & heard, heard
    r = httpx.post(server.url + "/v1/listen", headers={"Authorization": f"Token {KEY}"},
                   json={"url": "http://example.com/call.wav"})
    assert r.status_code == 400 and r.json()["err_code"] == "Bad Request"


def file_server_url(server, name: str) -> str:
    return server.settings.listen_url_prefixes.split(",")[0] + name


_ANY = st.recursive(st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)
_CONTROL = st.fixed_dictionaries({"type": st.sampled_from(["KeepAlive", "Finalize", "Configure", "Dance", 7])},
                                 optional={"channel": _ANY, "keyterms": _ANY}).map(json.dumps)
_FRAMES = st.lists(st.one_of(_CONTROL, st.text(max_size=40), st.binary(max_size=700)), max_size=6)


def test_any_frames_get_answers_in_the_protocol(server):
    """Whatever the client sends before CloseStream, it gets Deepgram's messages and a normal close."""
    from websockets.sync.client import connect

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_FRAMES)
    def run(frames):
        with connect(server.ws_url + "/v1/listen?encoding=linear16&sample_rate=8000&channels=2&multichannel=true",
                     additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            for frame in frames:
                ws.send(frame)
            ws.send(json.dumps({"type": "CloseStream"}))
            answers = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    answers.append(json.loads(ws.recv(timeout=HANG_GUARD_S)))
        assert closed.value.rcvd.code == 1000, closed.value.rcvd
        assert answers[-1]["type"] == "Metadata"
        assert {a["type"] for a in answers} <= {"Results", "Error", "ConfigureFailure", "Metadata", "SpeechStarted"}

    run()


def _encode(wav: bytes, *args: str) -> bytes:
    """A WAV re-encoded by ffmpeg (a converter written by others) into a streaming container."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "wav", "-i", "-", *args, "-"],
                          input=wav, capture_output=True, check=True)
    return proc.stdout


@pytest.mark.parametrize("container", ["webm-opus", "wav"])
def test_containers_without_encoding_are_decoded_as_they_stream(server, tmp_path, container):
    text = "Thank you for calling customer support. I can help you with your order today."
    write_wav(tmp_path / "say.wav", np.concatenate([silence(0.3), say(text), silence(1.0)]), 16000)
    wav = (tmp_path / "say.wav").read_bytes()
    audio = wav if container == "wav" else _encode(wav, "-c:a", "libopus", "-b:a", "32k", "-f", "webm")

    async def go():
        client = AsyncDeepgramClient(api_key=KEY, environment=environment(server))
        async with client.listen.v1.connect(model="nova-3", punctuate="true") as socket:
            return await stream(socket, audio, 4000)  # compressed: pace by bytes loosely

    received = asyncio.run(go())
    heard = " ".join(r.channel.alternatives[0].transcript for r in by_type(received, "Results") if r.is_final)
    assert {"calling", "support", "order"} <= words_of(heard), heard
    assert received[-1].type == "Metadata"


def test_undecodable_container_closes_with_data_0000(server):
    async def go():
        async with websockets.connect(server.ws_url + "/v1/listen",
                                      additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send(b"this is not audio in any container at all" * 200)
            await ws.send(json.dumps({"type": "CloseStream"}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), HANG_GUARD_S)
            return closed.value.rcvd

    rcvd = asyncio.run(go())
    assert rcvd.code == 1008 and rcvd.reason.startswith("DATA-0000")
