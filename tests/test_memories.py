"""memories.ai-style audio-stream tasks against the running app: synthesised speech served over
local HTTP (a WAV file, an MP3 file, an HLS playlist made by ffmpeg), pulled in real time,
transcribed, and delivered as one callback per 5 s segment to a local webhook receiver; stop (immediate and
idempotent, and the seed's own Python example), unreachable and undecodable sources."""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import time
import wave
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from callscribe.config import load_settings
from callscribe.testing.speech import say, silence
from e2e_helpers import WebhookReceiver
from servers import running_app, wait_until

SENTENCES = [
    "Thank you for calling customer support.",
    "I would like to check the status of my order.",
    "It should arrive by Friday afternoon.",
]
KEY = "mk:ms"
AUTH = {"Authorization": KEY}


def _speech() -> np.ndarray:
    parts = [silence(0.5)]
    for text in SENTENCES:
        parts += [say(text, "joe"), silence(1.5)]
    return np.concatenate(parts)


def _write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if audio.ndim == 1 else audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(audio).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    audio = _speech()
    _write_wav(root / "speech.wav", audio)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(root / "speech.wav"), "-b:a", "64k",
                    str(root / "speech.mp3")], check=True)
    (root / "hls").mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(root / "speech.wav"), "-c:a", "aac",
                    "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                    str(root / "hls" / "index.m3u8")], check=True)
    (root / "page.txt").write_text("<html><body>this is not audio</body></html>\n" * 50)
    return root


@pytest.fixture(scope="module")
def files(media_dir):
    """A loopback HTTP server for the media directory; yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(media_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hook():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def app(engine, hook, tmp_path_factory):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, port=0,
                             api_keys=f"{KEY}:acme,other:os:globex", webhook_url=hook.url)
    with running_app(settings, engine=engine) as server:
        yield server


def _start(app, **body) -> str:
    r = httpx.post(app.url + "/serve/api/v2/audio-stream/start", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["code"] == 200 and out["message"] == "success"
    assert out["data"]["message"] == "Audio stream transcription started"
    return out["data"]["task_id"]


def _callbacks(hook, task_id: str) -> list[dict]:
    return [b for b in list(hook.bodies) if b.get("task_id") == task_id]


def _wait_end(hook, task_id: str) -> list[dict]:
    """Every callback of the task once its end callback (transcript null) has arrived."""
    wait_until(lambda: any(c["data"]["transcript"] is None for c in _callbacks(hook, task_id)),
               f"the end callback of {task_id}")
    return _callbacks(hook, task_id)


def _words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()


def _check_segments(segments: list[dict], duration_s: float) -> None:
    """One callback per 5 s of the media, from 0 with no gaps, each word in the segment its start
    falls in; the last segment ends with the media."""
    assert [cb["data"]["segment_index"] for cb in segments] == list(range(int(np.ceil(duration_s / 5))))
    for cb in segments:
        assert cb["code"] == 200 and cb["message"] == "SUCCESS"
        data = cb["data"]
        assert data["status"] == 0 and data["message"] == "success"
        assert isinstance(data["segment_start_time"], str) and isinstance(data["segment_end_time"], str)
        start, end = float(data["segment_start_time"]), float(data["segment_end_time"])
        assert start == 5 * data["segment_index"]
        if cb is not segments[-1]:
            assert end == start + 5
        for word in data["transcript"]["words"]:
            assert start <= word["start"] < start + 5 and word["start"] <= word["end"]
        said = _words(" ".join(w["text"] for w in data["transcript"]["words"]))
        assert said == _words(data["transcript"]["text"])  # text and words tell the same segment
    assert float(segments[-1]["data"]["segment_end_time"]) == pytest.approx(duration_s, abs=0.2)


def _segment_of(segments: list[dict], word: str) -> int:
    """The index of the segment whose words include `word`."""
    return next(cb["data"]["segment_index"] for cb in segments
                if word in _words(" ".join(w["text"] for w in cb["data"]["transcript"]["words"])))


@pytest.mark.parametrize("path", ["speech.wav", "hls/index.m3u8"])
def test_file_is_pulled_and_sent_as_segments(app, hook, files, media_dir, path):
    duration = len(_speech()) / 16000
    task_id = _start(app, audio_url=f"{files}/{path}", provider="assemblyai", language_code="en",
                     sentiment_analysis=True)
    r = httpx.get(f"{app.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH)
    assert r.status_code == 200 and r.json()["data"]["state"] in ("running", "ended")
    assert r.json()["data"]["ignored_options"] == ["sentiment_analysis"]

    callbacks = _wait_end(hook, task_id)
    *segments, end = callbacks
    assert end["data"]["transcript"] is None and end["data"]["status"] == 15
    assert segments and all(cb["data"]["transcript"] is not None for cb in segments)
    _check_segments(segments, duration)
    heard = _words(" ".join(cb["data"]["transcript"]["text"] for cb in segments))
    for word in ("calling", "support", "status", "order", "friday", "afternoon"):
        assert word in heard, heard
    # The speech (11.1 s): 0.5 s of silence, three sentences of about 2 s, each followed by 1.5 s of
    # silence: the first in segment 0, the last ("... Friday afternoon", 7.6-9.6 s) in segment 1,
    # and segment 2 (10-11.1 s) is silence, sent all the same with an empty transcript.
    assert len(segments) == 3 and _segment_of(segments, "calling") == 0
    assert _segment_of(segments, "friday") == _segment_of(segments, "afternoon") == 1
    assert segments[2]["data"]["transcript"]["words"] == [] and segments[2]["data"]["transcript"]["text"] == ""
    assert end["data"]["segment_index"] == segments[-1]["data"]["segment_index"]  # the last segment of the media
    assert end["data"]["segment_end_time"] == segments[-1]["data"]["segment_end_time"]
    assert float(end["data"]["segment_end_time"]) == pytest.approx(duration, abs=0.2)

    view = httpx.get(f"{app.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH).json()["data"]
    assert view["state"] == "ended" and view["status"] == 15 and view["segments"] == len(segments)
    assert view["media_seconds"] == pytest.approx(duration, abs=0.2)


def test_segments_go_out_through_a_long_silence(app, hook, files, media_dir):
    # One sentence, then a minute of silence: the segments of the silence are sent while the task
    # still runs (the engine's settled marks close them), not all at once when the media ends.
    _write_wav(media_dir / "pause.wav", np.concatenate([silence(0.5), say(SENTENCES[0], "joe"), silence(60)]))
    task_id = _start(app, audio_url=f"{files}/pause.wav", provider="assemblyai", language_code="en")
    wait_until(lambda: len(_callbacks(hook, task_id)) >= 4, "the segments of the silence")
    view = httpx.get(f"{app.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH).json()["data"]
    assert view["state"] == "running" and view["segments"] >= 4
    httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": task_id}, headers=AUTH)
    *segments, end = _wait_end(hook, task_id)
    assert end["data"]["status"] == 14
    assert [cb["data"]["segment_index"] for cb in segments] == list(range(len(segments)))
    assert "calling" in _words(segments[0]["data"]["transcript"]["text"])
    assert all(cb["data"]["transcript"]["text"] == "" for cb in segments[1:4])


def test_stop_is_immediate_and_idempotent(app, hook, files):
    task_id = _start(app, audio_url=f"{files}/speech.mp3", provider="elevenlabs", speaker_labels=False)
    wait_until(lambda: _callbacks(hook, task_id), "a first segment")
    r = httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": task_id}, headers=AUTH)
    stopped = {"code": 200, "message": "success",
               "data": {"task_id": task_id, "message": "Audio stream stopped successfully"}}
    assert r.status_code == 200 and r.json() == stopped
    view = httpx.get(f"{app.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH).json()["data"]
    assert view["state"] == "ended" and view["status"] == 14  # stopped by the time stop answered
    *_, end = _wait_end(hook, task_id)
    assert end["code"] == 200 and end["message"] == "SUCCESS" and end["task_id"] == task_id
    assert end["data"]["status"] == 14 and end["data"]["message"] == "Stream stopped by user"
    assert end["data"]["transcript"] is None
    assert isinstance(end["data"]["segment_start_time"], str)

    again = httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": task_id}, headers=AUTH)
    assert again.status_code == 200 and again.json() == stopped
    app.flush()
    time.sleep(1.0)  # nothing may follow the end callback (not a timing assertion: absence after a while)
    assert _callbacks(hook, task_id)[-1] == end

    unknown = httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": "nope"}, headers=AUTH)
    assert unknown.status_code == 400 and unknown.json()["code"] == 400 and unknown.json()["data"] is None
    other = httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": task_id},
                       headers={"Authorization": "other:os"})
    assert other.status_code == 400  # another tenant's task does not exist for it
    bad = httpx.post(app.url + "/serve/api/v2/audio-stream/stop", json={"task_id": task_id},
                     headers={"Authorization": "mk:wrong"})
    assert bad.status_code == 401 and bad.json() == {"code": 401, "message": "Unauthorized", "data": None}


def test_seed_python_example_stops_a_task(app, hook, files, tmp_path):
    """Seed 002's example, with only BASE_URL and API_KEY changed, run as its own process, stops
    a running task (started under the seed's task id) and prints the seed's response."""
    from callscribe.api import memories
    from callscribe.ingest.url import SCHEMES

    task_id = "660e8400-e29b-41d4-a716-446655440001"
    key = next(k for k in app.services.api_keys if KEY.startswith(k.id + ":"))
    request = memories.parse_start({"audio_url": f"{files}/speech.wav", "provider": "assemblyai"}, SCHEMES)
    app.run(memories.launch(app.services, app.app.state.memories_tasks, key, request, task_id=task_id))
    example = _SEED_EXAMPLE.replace('"https://mavi-backend.memories.ai/serve/api/v2"', repr(app.url + "/serve/api/v2"))
    example = example.replace('"sk-mai-this_a_test_string_please_use_your_generated_key_during_testing"', repr(KEY))
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run(["python", str(script)], capture_output=True, text=True, check=True).stdout
    assert out == str({"code": 200, "message": "success",
                       "data": {"task_id": task_id, "message": "Audio stream stopped successfully"}}) + "\n"
    *_, end = _wait_end(hook, task_id)
    assert end["data"]["status"] == 14


# Seed 002's "Code Example", verbatim.
_SEED_EXAMPLE = '''
import requests

BASE_URL = "https://mavi-backend.memories.ai/serve/api/v2"
API_KEY = "sk-mai-this_a_test_string_please_use_your_generated_key_during_testing"
HEADERS = {
    "Authorization": f"{API_KEY}",
    "Content-Type": "application/json"
}

def stop_audio_stream(task_id: str):
    url = f"{BASE_URL}/audio-stream/stop"
    data = {"task_id": task_id}
    resp = requests.post(url, json=data, headers=HEADERS)
    return resp.json()

# Usage example
result = stop_audio_stream("660e8400-e29b-41d4-a716-446655440001")
print(result)
'''


@pytest.mark.parametrize("where, status", [("unreachable", 16), ("page.txt", 17), ("missing.wav", 16)])
def test_sources_that_fail_end_the_task_with_their_status(app, hook, files, where, status):
    if where == "unreachable":
        import socket

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/speech.wav"
    else:
        url = f"{files}/{where}"
    task_id = _start(app, audio_url=url, provider="assemblyai")
    callbacks = _wait_end(hook, task_id)
    assert len(callbacks) == 1
    data = callbacks[0]["data"]
    assert data["status"] == status and data["transcript"] is None and data["segment_index"] == 0
    assert data["message"] and url not in data["message"]
    view = httpx.get(f"{app.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH).json()["data"]
    assert view["state"] == "ended" and view["status"] == status


def test_start_errors_in_the_envelope(app):
    post = functools.partial(httpx.post, app.url + "/serve/api/v2/audio-stream/start")
    r = post(json={"audio_url": "ftp://example.com/a.wav"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == 400 and "audio_url" in r.json()["message"]
    r = post(json={"audio_url": "http://127.0.0.1/a.wav", "provider": "whisper"}, headers=AUTH)
    assert r.status_code == 400 and "provider" in r.json()["message"]
    r = post(json={"audio_url": "http://127.0.0.1/a.wav", "language_code": "xx"}, headers=AUTH)
    assert r.status_code == 400 and "language_code" in r.json()["message"]
    r = post(json={"audio_url": "http://127.0.0.1/a.wav"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["data"] is None
    r = httpx.get(app.url + "/serve/api/v2/audio-stream/unknown", headers=AUTH)
    assert r.status_code == 400 and r.json()["code"] == 400


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rtmp_server(source: Path, port: int) -> subprocess.Popen:
    """ffmpeg as a one-client RTMP server that sends `source` in real time, then ends the stream."""
    return subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(source), "-c:a", "aac", "-f", "flv",
                             "-listen", "1", f"rtmp://127.0.0.1:{port}/live/stream"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_live_rtmp_source_reconnects_then_ends_after_inactivity(app, hook, tmp_path):
    """A live source that drops is reconnected with backoff (the second half of the speech comes
    from a second server on the same address), and ends the task after inactivity_timeout."""
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    _write_wav(first, np.concatenate([silence(0.5), say(SENTENCES[0], "joe"), silence(1.0)]))
    _write_wav(second, np.concatenate([silence(0.3), say(SENTENCES[2], "joe"), silence(1.0)]))
    port = _free_port()
    server = _rtmp_server(first, port)
    try:
        task_id = _start(app, audio_url=f"rtmp://127.0.0.1:{port}/live/stream", provider="assemblyai",
                         inactivity_timeout=5)
        server.wait(timeout=120)
        server = _rtmp_server(second, port)  # the stream comes back
        server.wait(timeout=120)
        *segments, end = _wait_end(hook, task_id)
    finally:
        server.kill()
    assert end["data"]["status"] == 15 and end["data"]["transcript"] is None
    heard = _words(" ".join(cb["data"]["transcript"]["text"] for cb in segments))
    for word in ("calling", "support", "friday", "afternoon"):  # both halves, one task
        assert word in heard, heard
    # The media timeline goes on across the reconnect (the time without audio is not counted).
    friday = [w for cb in segments for w in cb["data"]["transcript"]["words"] if "friday" in _words(w["text"])]
    assert friday and friday[0]["start"] >= 3.0
    assert [cb["data"]["segment_index"] for cb in segments] == list(range(len(segments)))


def test_speaker_labels_transcribe_each_channel_as_its_speaker(app, hook, media_dir, files):
    left = np.concatenate([silence(0.5), say(SENTENCES[0], "joe"), silence(4.0)])
    right = np.concatenate([silence(4.0), say(SENTENCES[2], "joe-high"), silence(0.5)])
    n = max(len(left), len(right))
    stereo = np.stack([np.pad(left, (0, n - len(left))), np.pad(right, (0, n - len(right)))], axis=1)
    _write_wav(media_dir / "stereo.wav", stereo)
    task_id = _start(app, audio_url=f"{files}/stereo.wav", provider="assemblyai", speaker_labels=True)
    *segments, end = _wait_end(hook, task_id)
    assert end["data"]["status"] == 15
    _check_segments(segments, n / 16000)
    said: dict[str, list[str]] = {}
    for cb in segments:
        for piece in cb["data"]["transcript"]["utterances"]:
            said.setdefault(piece["speaker"], []).extend(_words(piece["text"]))
    assert set(said) == {"speaker_0", "speaker_1"}
    assert "support" in said["speaker_0"] and "friday" not in said["speaker_0"]
    assert "friday" in said["speaker_1"] and "support" not in said["speaker_1"]


@pytest.mark.parametrize("encoding", ["pcm_s16le", "container"])
def test_push_websocket_streams_turns_back(app, media_dir, encoding):
    import asyncio

    import websockets

    audio = _speech()
    url = f"{app.ws_url}/serve/ws/v2/audio-stream?provider=assemblyai&api_key={KEY}&encoding={encoding}"
    # 100 ms of audio a frame: PCM, or the same speech as an MP3 file cut into pieces
    mp3 = (media_dir / "speech.mp3").read_bytes()
    frames = [audio[i:i + 1600].astype("<i2").tobytes() for i in range(0, len(audio), 1600)] \
        if encoding == "pcm_s16le" else [mp3[i:i + 800] for i in range(0, len(mp3), 800)]

    async def session() -> list[dict]:
        got: list[dict] = []
        async with websockets.connect(url) as ws:
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(0.025)  # about four times real time
            await ws.send(json.dumps({"type": "Terminate"}))
            async for message in ws:
                got.append(json.loads(message))
        return got

    messages = asyncio.run(session())
    assert messages[0]["type"] == "Begin" and messages[-1]["type"] == "Termination"
    assert messages[-1]["audio_duration_seconds"] == pytest.approx(len(audio) / 16000, abs=0.1)
    turns = [m for m in messages if m["type"] == "Turn"]
    finals = [t for t in turns if t["end_of_turn"]]
    assert finals and all(t["words"] and all(w["word_is_final"] for w in t["words"]) for t in finals)
    heard = _words(" ".join(t["transcript"] for t in finals))
    for word in ("calling", "support", "status", "order", "friday", "afternoon"):
        assert word in heard, heard
    assert _words(" ".join(w["text"] for t in finals for w in t["words"])) == heard


@pytest.mark.parametrize("query, status", [("provider=assemblyai", 401), (f"api_key={KEY}", 400),
                                           (f"provider=openai&api_key={KEY}", 400),
                                           ("provider=assemblyai&api_key=mk:bad", 401),
                                           (f"provider=assemblyai&api_key={KEY}&sample_rate=12", 400),
                                           (f"provider=assemblyai&api_key={KEY}&encoding=opus", 400)])
def test_push_websocket_handshake_errors(app, query, status):
    import asyncio

    import websockets

    async def attempt() -> int:
        try:
            async with websockets.connect(f"{app.ws_url}/serve/ws/v2/audio-stream?{query}"):
                return 101
        except websockets.InvalidStatus as refused:
            body = json.loads(refused.response.body)
            assert body == {"code": refused.response.status_code, "message": body["message"], "data": None}
            return refused.response.status_code

    assert asyncio.run(attempt()) == status


def test_running_tasks_per_key_are_limited(app, hook):
    port = _free_port()  # nothing listens: each task keeps retrying its live source, so stays running
    url = f"rtmp://127.0.0.1:{port}/live/none"
    other_key = {"Authorization": "other:os"}
    stop = functools.partial(httpx.post, app.url + "/serve/api/v2/audio-stream/stop")
    limit = app.settings.memories_tasks_per_key
    mine = [_start(app, audio_url=url, provider="assemblyai", inactivity_timeout=120) for _ in range(limit)]
    try:
        r = httpx.post(app.url + "/serve/api/v2/audio-stream/start", json={"audio_url": url}, headers=AUTH)
        assert r.status_code == 429 and r.json()["code"] == 429 and r.json()["data"] is None
        other = httpx.post(app.url + "/serve/api/v2/audio-stream/start", json={"audio_url": url}, headers=other_key)
        assert other.status_code == 200  # another key's budget is its own
        stop(json={"task_id": other.json()["data"]["task_id"]}, headers=other_key)
    finally:
        for task_id in mine:
            stop(json={"task_id": task_id}, headers=AUTH)
    for task_id in mine:
        *_, end = _wait_end(hook, task_id)
        assert end["data"]["status"] == 14 and end["data"]["segment_index"] == 0
    again = _start(app, audio_url=url, provider="assemblyai")  # room again
    stop(json={"task_id": again}, headers=AUTH)


def test_a_start_without_a_webhook_is_refused(start_app):
    stub = start_app()  # no CALLSCRIBE_WEBHOOK_URL
    r = httpx.post(stub.url + "/serve/api/v2/audio-stream/start", json={"audio_url": "http://127.0.0.1/a.wav"},
                   headers={"Authorization": "ka:sa"})
    assert r.status_code == 400
    assert r.json() == {"code": 400, "message": "An async request requires at least one webhook.", "data": None}


def test_callbacks_survive_a_restart(engine, files, tmp_path):
    """Callbacks wait in the outbox while the receiver is down, across a restart: the task's
    segments and its end ("Server shutting down") reach the receiver from the next process."""
    data = tmp_path / "data"
    values = {"data_dir": data, "sip_port": 0, "port": 0, "api_keys": f"{KEY}:acme",
              "webhook_url": f"http://127.0.0.1:{_free_port()}/hook"}  # nothing listens there yet
    with running_app(load_settings(**values), engine=engine) as first:
        task_id = _start(first, audio_url=f"{files}/speech.wav", provider="assemblyai")
        view = functools.partial(httpx.get, f"{first.url}/serve/api/v2/audio-stream/{task_id}", headers=AUTH)
        wait_until(lambda: view().json()["data"]["segments"] >= 1, "a first final")
    with WebhookReceiver() as receiver:
        with running_app(load_settings(**{**values, "webhook_url": receiver.url}), engine=engine):
            *segments, end = _wait_end(receiver, task_id)
    assert [cb["data"]["segment_index"] for cb in segments] == list(range(len(segments)))
    assert segments and all(cb["data"]["status"] == 0 for cb in segments)
    assert "calling" in _words(segments[0]["data"]["transcript"]["text"])
    assert end["data"]["status"] == 18 and end["data"]["transcript"] is None


def test_pushed_bytes_that_do_not_decode_close_the_socket(app):
    import asyncio

    import websockets

    url = f"{app.ws_url}/serve/ws/v2/audio-stream?provider=assemblyai&api_key={KEY}&encoding=container"

    async def session() -> tuple[list[dict], int | None]:
        got: list[dict] = []
        async with websockets.connect(url) as ws:
            await ws.send(b"<html>this is not audio</html>" * 100)
            await ws.send(json.dumps({"type": "Terminate"}))
            try:
                async for message in ws:
                    got.append(json.loads(message))
            except websockets.ConnectionClosedError:
                pass
        return got, ws.close_code

    messages, code = asyncio.run(session())
    assert [m["type"] for m in messages] == ["Begin"] and code == 1007


def test_kill_9_mid_task_then_restart_sends_every_segment_once_and_the_end(files, media_dir, tmp_path):
    """`callscribe serve` killed with SIGKILL while a task runs and its receiver is down: the next
    start sends the segments stored before the kill, rebuilds the ones its stored finals fill, and
    ends the task ("interrupted"): indices from 0 without a gap, each webhook-id once."""
    import signal
    import sys

    from test_serve import serve_env, wait_for

    long = np.concatenate([_speech(), silence(15.0)])  # the kill comes well before its end
    _write_wav(media_dir / "long.wav", long)
    hook = WebhookReceiver()
    hook.accept.clear()  # down: callbacks wait in the outbox
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(tmp_path, CALLSCRIBE_API_KEYS=f"{KEY}:acme", CALLSCRIBE_WEBHOOK_URL=hook.url)

    def serve() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "callscribe", "serve", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(base + "/readyz", 200, proc)
        return proc

    proc = serve()
    try:
        r = httpx.post(base + "/serve/api/v2/audio-stream/start", headers=AUTH,
                       json={"audio_url": f"{files}/long.wav", "provider": "assemblyai"})
        task_id = r.json()["data"]["task_id"]
        view = functools.partial(httpx.get, f"{base}/serve/api/v2/audio-stream/{task_id}", headers=AUTH)
        wait_until(lambda: view().json()["data"]["segments"] >= 1, "a first segment stored")
        assert view().json()["data"]["state"] == "running" and not hook.bodies
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

        hook.accept.set()
        proc = serve()
        *segments, end = _wait_end(hook, task_id)
        app_ids = [i for i, b in zip(hook.ids, hook.bodies) if b.get("task_id") == task_id]
        assert len(app_ids) == len(set(app_ids)) == len(segments) + 1  # each webhook-id exactly once
        assert [cb["data"]["segment_index"] for cb in segments] == list(range(len(segments)))
        for cb in segments:
            start = float(cb["data"]["segment_start_time"])
            assert start == 5 * cb["data"]["segment_index"] and cb["data"]["status"] == 0
            assert all(start <= w["start"] < start + 5 for w in cb["data"]["transcript"]["words"])
        assert _segment_of(segments, "calling") == 0
        assert end["data"]["status"] == 20 and end["data"]["transcript"] is None
        assert end["data"]["segment_index"] == segments[-1]["data"]["segment_index"]
        time.sleep(1.0)  # nothing may follow the end callback (not a timing assertion: absence after a while)
        assert _callbacks(hook, task_id)[-1] == end
    finally:
        if proc.poll() is None:
            proc.kill()
        hook.close()
