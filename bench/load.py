"""Load over the wire: two-party calls streamed in real time to a running `callscribe serve`.

    python bench/load.py [--legs 1,8,16,24,48] [--seconds 40] [--protocol asapp,twilio,listen] [--frame-ms 100,20]
                         [--stagger 8] [--url http://HOST:PORT --api-key ID:SECRET [--server-pid PID]]
                         [--no-wer] [--json FILE]

Without --url it starts `python -m callscribe serve` itself (a fresh data directory, a free port,
SIP off) and measures that process. It talks to the server only over HTTP and WebSockets, the way a
user's client does, so it keeps working whatever the server's internals become:
- asapp: ASAPP direct WebSocket, one connection per leg (POST /autotranscribe/v1/streaming-url with
  the call's externalId, WS /autotranscribe/v1/stream: startStream, binary L16 8 kHz, finishStream);
  finals are the `transcript` messages on that connection;
- twilio: Twilio Media Streams, one connection per call carrying both tracks (GET
  /mg-autotranscribe/v1/twilio-media-stream-url, connected/start/media/stop with base64 mu-law), and
  POST /mg-autotranscribe/v1/start-streaming for the call; finals come from the events WebSocket;
- listen: Deepgram's live API, one WS /v1/listen connection per leg (`Authorization: Token ID:SECRET`,
  encoding=linear16, sample_rate=8000, channels=1, endpointing=300, interim_results=true, the
  leg's name as `tag`; binary L16 8 kHz, then CloseStream); finals are the `is_final` Results on
  that connection, first partials its interim Results.
The asapp and twilio calls also subscribe to WS /v1/calls/{guid}/events, where their first partials
are measured.

Calls are the scripted two-party calls of callscribe.testing.speech (synthesised once, cached on
disk), through 8 kHz mu-law (sox), each call entering at a different turn; N legs are N/2 calls,
started evenly over --stagger seconds. Each frame is sent when its audio is complete (real-time
pacing, --frame-ms). Per N, protocol and frame size it reports:
- final p50/p95/max: arrival of an utterance's last final at the client minus the moment the frame
  holding the utterance's last sample was sent (the last turn of a leg, ended by finishStream, stop or
  CloseStream, is left out);
- first partial p50: first partial of a turn (events WebSocket; listen: its interim Results) minus
  the send of its first sample;
- missed: turns that got no final; refused: legs the server refused (5002, HTTP 503; listen: a
  handshake answered 429 or 503);
- server CPU (cores) and peak RSS (psutil on the server's pid), client CPU (cores, this process);
- WER of the streamed finals and of `callscribe transcribe` (the same model, offline, on the same
  8 kHz audio) against the script, over the same turns.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RATE = 8000
API_KEY = ("bench", "bench-secret-0123456789")
HANG_S = 120.0  # a step never waits longer than this for a call's last results


# -- audio ------------------------------------------------------------------------------------------


@dataclass
class Turn:
    start_s: float
    end_s: float
    text: str


@dataclass
class CallAudio:
    """One call variant: both roles' 8 kHz PCM (after mu-law) and mu-law bytes, equal lengths."""

    key: str
    pcm: dict[str, np.ndarray]  # role -> int16 8 kHz
    ulaw: dict[str, bytes]
    turns: dict[str, list[Turn]]  # role -> its turns, in the call's timeline


def make_calls(seconds: float) -> list[CallAudio]:
    """Every (script, starting turn) variant, `seconds` long (a call loops if shorter)."""
    from callscribe.testing import speech

    out = []
    for si, script in enumerate(speech.CALL_SCRIPTS):
        call = speech.build_call(script)
        total = len(next(iter(call.tracks.values())))
        total_s = total / 16000
        for k, first in enumerate(call.turns):
            offset_s = max(0.0, first.start_s - 0.5)
            n = int(seconds * 16000)
            reps = int(np.ceil((n + offset_s * 16000) / total)) + 1
            pcm, ulaw, turns = {}, {}, {}
            for role in ("customer", "agent"):
                a = int(offset_s * 16000)
                looped = np.tile(call.tracks[role], reps)[a:a + n]
                ulaw[role] = speech.telephony(looped)
                pcm[role] = speech.mulaw_to_pcm16(ulaw[role])
                turns[role] = [Turn(t.start_s + r * total_s - offset_s, t.end_s + r * total_s - offset_s, t.text)
                               for r in range(reps) for t in call.turns
                               if t.role == role and t.start_s + r * total_s - offset_s >= 0
                               and t.end_s + r * total_s - offset_s <= seconds]
            out.append(CallAudio(f"s{si}t{k}-{seconds:g}", pcm, ulaw, turns))
    return out


# -- the server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`callscribe serve` in a child process (or a server given by URL)."""

    def __init__(self, url: str | None, api_key: tuple[str, str], pid: int | None) -> None:
        self.proc: subprocess.Popen | None = None
        self.url = url.rstrip("/") if url else None
        self.api_key = api_key
        self.pid = pid
        self.log: Path | None = None

    def start(self) -> None:
        if self.url is not None:
            return
        data = Path(tempfile.mkdtemp(prefix="callscribe-load-"))
        port = free_port()
        env = {**os.environ, "CALLSCRIBE_DATA_DIR": str(data), "CALLSCRIBE_HOST": "127.0.0.1",
               "CALLSCRIBE_PORT": str(port), "CALLSCRIBE_SIP_PORT": "0",
               "CALLSCRIBE_API_KEYS": ":".join(self.api_key)}
        self.log = data / "serve.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "callscribe", "serve"], env=env,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"callscribe serve exited {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"callscribe serve did not get ready; see {self.log}")

    @property
    def base(self) -> str:
        assert self.url is not None, "start() first"
        return self.url

    @property
    def ws_url(self) -> str:
        return "ws" + self.base[len("http"):]

    @property
    def headers(self) -> dict[str, str]:
        return {"asapp-api-id": self.api_key[0], "asapp-api-secret": self.api_key[1]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ProcessMeter:
    """CPU (cores) and peak RSS of one process over a step, sampled every 0.5 s."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self.proc = psutil.Process(pid) if pid else None
        self.peak_rss = 0.0
        self._t0 = self._cpu0 = 0.0
        self._task: asyncio.Task | None = None

    def _cpu(self) -> float:
        assert self.proc is not None
        t = self.proc.cpu_times()
        return t.user + t.system

    async def _sample(self) -> None:
        assert self.proc is not None
        while True:
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.5)

    def start(self) -> None:
        if self.proc is not None:
            self._t0, self._cpu0 = time.monotonic(), self._cpu()
            self._task = asyncio.create_task(self._sample())

    def stop(self) -> dict[str, float | None]:
        if self.proc is None:
            return {"cpu_cores": None, "rss_mb": None}
        assert self._task is not None
        self._task.cancel()
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss / 2**20)
        return {"cpu_cores": (self._cpu() - self._cpu0) / max(1e-6, time.monotonic() - self._t0),
                "rss_mb": self.peak_rss}


# -- one call over the wire -------------------------------------------------------------------------


@dataclass
class Leg:
    role: str
    turns: list[Turn]
    frames: int
    sent: np.ndarray  # monotonic send time of each frame (NaN until sent)
    refused: bool = False
    started: bool = False
    finals: list[tuple[float, int, int, str]] = field(default_factory=list)  # (arrival, start_ms, end_ms, text)
    partials: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass
class CallRun:
    guid: str
    audio: CallAudio
    start_at: float
    legs: dict[str, Leg] = field(default_factory=dict)
    error: str | None = None


def _frame_of(seconds: float, frame_samples: int) -> int:
    """Index of the frame that holds the sample at `seconds`."""
    return max(0, int(np.ceil(seconds * RATE / frame_samples)) - 1)


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _send_in_real_time(ws: Any, leg: Any, pcm: np.ndarray, step: int, frame_ms: int) -> None:
    """Each binary frame sent when its audio is complete; `leg.sent[k]` when frame k went."""
    t0 = time.monotonic()
    for k in range(leg.frames):
        await _sleep_until(t0 + (k + 1) * frame_ms / 1000)
        await ws.send(pcm[k * step:(k + 1) * step].astype("<i2").tobytes())
        leg.sent[k] = time.monotonic()


async def _events(server: Server, run: CallRun, ready: asyncio.Event) -> None:
    """The call's events WebSocket: partials for every protocol, finals too for Twilio."""
    import websockets

    key, secret = server.api_key
    url = f"{server.ws_url}/v1/calls/{run.guid}/events?apiId={key}&apiSecret={secret}"
    await ready.wait()
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
            now = time.monotonic()
            ev = json.loads(raw)
            kind = ev.get("type")
            role = ev.get("role") or ev.get("participant")
            leg = run.legs.get(role)
            if kind == "partial" and leg is not None:
                leg.partials.append((now, ev["start"], ev["end"]))
            elif kind == "final" and leg is not None and ev.get("text") and run_is_twilio(run):
                leg.finals.append((now, ev["start"], ev["end"], ev["text"]))
            elif kind == "state" and ev.get("state") == "media-ended":
                return


def run_is_twilio(run: CallRun) -> bool:
    return run.guid.startswith("tw-")


LISTEN_QUERY = "encoding=linear16&sample_rate=8000&channels=1&endpointing=300&interim_results=true"


async def listen_leg(server: Server, run: CallRun, leg: Leg, frame_ms: int) -> None:
    """One leg as a Deepgram live client: its own /v1/listen connection (each is a call)."""
    import websockets

    pcm = run.audio.pcm[leg.role]
    step = RATE * frame_ms // 1000
    url = f"{server.ws_url}/v1/listen?{LISTEN_QUERY}&tag={run.guid}-{leg.role}"
    try:
        ws = await websockets.connect(url, max_size=None,
                                      additional_headers={"Authorization": "Token " + ":".join(server.api_key)})
    except websockets.InvalidStatus as refused:
        leg.refused = refused.response.status_code in (429, 503)
        if not leg.refused:
            run.error = f"listen handshake: HTTP {refused.response.status_code}"
        return
    async with ws:
        leg.started = True

        async def receive() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") != "Results":
                    continue
                alt = msg["channel"]["alternatives"][0]
                words = alt.get("words") or []
                span = ((words[0]["start"], words[-1]["end"]) if words
                        else (msg["start"], msg["start"] + msg["duration"]))
                start_ms, end_ms = int(span[0] * 1000), int(span[1] * 1000)
                if msg.get("is_final") and alt.get("transcript"):
                    leg.finals.append((time.monotonic(), start_ms, end_ms, alt["transcript"]))
                elif not msg.get("is_final") and alt.get("transcript"):
                    leg.partials.append((time.monotonic(), start_ms, end_ms))

        receiver = asyncio.create_task(receive())
        await _send_in_real_time(ws, leg, pcm, step, frame_ms)
        await ws.send(json.dumps({"type": "CloseStream"}))
        try:
            await asyncio.wait_for(receiver, HANG_S)  # the server closes after its last Results and Metadata
        except websockets.ConnectionClosedError as exc:
            run.error = f"listen closed: {exc}"


async def listen_call(server: Server, http: Any, run: CallRun, frame_ms: int) -> None:
    await _sleep_until(run.start_at)
    results = await asyncio.gather(*(listen_leg(server, run, leg, frame_ms) for leg in run.legs.values()),
                                   return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            run.error = f"{type(res).__name__}: {res}"


async def asapp_leg(server: Server, http: Any, run: CallRun, leg: Leg, frame_ms: int,
                    started: asyncio.Event) -> None:
    import websockets

    r = await http.post(server.base + "/autotranscribe/v1/streaming-url", headers=server.headers,
                        json={"externalId": run.guid})
    r.raise_for_status()
    pcm = run.audio.pcm[leg.role]
    step = RATE * frame_ms // 1000
    async with websockets.connect(r.json()["streamingUrl"], max_size=None) as ws:
        await ws.send(json.dumps({"message": "startStream",
                                  "sender": {"role": leg.role, "externalId": f"{run.guid}-{leg.role}"}}))
        first = json.loads(await asyncio.wait_for(ws.recv(), HANG_S))
        if first.get("message") != "startResponse":
            leg.refused = first.get("status", {}).get("code") == "5002"
            if not leg.refused:
                run.error = f"startStream: {first}"
            return
        leg.started = True
        started.set()
        done = asyncio.get_running_loop().create_future()

        async def receive() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("message") == "transcript":
                    text = " ".join(u.get("text", "") for u in msg.get("utterance", []))
                    leg.finals.append((time.monotonic(), msg["start"], msg["end"], text))
                elif msg.get("message") == "finalResponse":
                    break
            if not done.done():
                done.set_result(None)

        receiver = asyncio.create_task(receive())
        await _send_in_real_time(ws, leg, pcm, step, frame_ms)
        await ws.send(json.dumps({"message": "finishStream"}))
        try:
            await asyncio.wait_for(done, HANG_S)
        finally:
            receiver.cancel()


async def asapp_call(server: Server, http: Any, run: CallRun, frame_ms: int) -> None:
    await _sleep_until(run.start_at)
    started = asyncio.Event()
    events = asyncio.create_task(_events(server, run, started))
    results = await asyncio.gather(*(asapp_leg(server, http, run, leg, frame_ms, started) for leg in run.legs.values()),
                                   return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            run.error = f"{type(res).__name__}: {res}"
    if not started.is_set():
        events.cancel()
        return
    try:
        await asyncio.wait_for(events, HANG_S)
    except (asyncio.TimeoutError, Exception) as exc:  # the finals came on the legs' own sockets
        run.error = run.error or f"events: {type(exc).__name__}"


async def twilio_call(server: Server, http: Any, run: CallRun, frame_ms: int) -> None:
    import websockets

    await _sleep_until(run.start_at)
    r = await http.get(server.base + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=server.headers)
    r.raise_for_status()
    tracks = {"inbound": "customer", "outbound": "agent"}
    step = RATE * frame_ms // 1000
    sid = "MZ" + hashlib.sha1(run.guid.encode()).hexdigest()[:32]
    started = asyncio.Event()
    events = asyncio.create_task(_events(server, run, started))
    async with websockets.connect(r.json()["streamingUrl"], max_size=None) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "streamSid": sid, "callSid": run.guid, "accountSid": "ACbench", "tracks": list(tracks),
            "customParameters": {"guid": run.guid},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1}}}))
        body = {"namespace": "twilio", "guid": run.guid, "customerId": f"{run.guid}-c", "agentId": f"{run.guid}-a"}
        resp = await http.post(server.base + "/mg-autotranscribe/v1/start-streaming", headers=server.headers,
                               json=body, timeout=HANG_S)
        if resp.status_code != 200:
            for leg in run.legs.values():
                leg.refused = resp.status_code == 503
            if resp.status_code != 503:
                run.error = f"start-streaming {resp.status_code}: {resp.text[:200]}"
            events.cancel()
            return
        for leg in run.legs.values():
            leg.started = True
        started.set()
        seq = 2
        t0 = time.monotonic()
        frames = min(leg.frames for leg in run.legs.values())
        for k in range(frames):
            await _sleep_until(t0 + (k + 1) * frame_ms / 1000)
            for track, role in tracks.items():
                payload = base64.b64encode(run.audio.ulaw[role][k * step:(k + 1) * step]).decode()
                await ws.send(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid, "media": {
                    "track": track, "chunk": str(k + 1), "timestamp": str(k * frame_ms), "payload": payload}}))
                seq += 1
            now = time.monotonic()
            for leg in run.legs.values():
                leg.sent[k] = now
        await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": sid,
                                  "stop": {"accountSid": "ACbench", "callSid": run.guid}}))
    try:
        await asyncio.wait_for(events, HANG_S)
    except (asyncio.TimeoutError, Exception) as exc:
        run.error = f"events: {type(exc).__name__}"


# -- a step: N legs ---------------------------------------------------------------------------------


def plan(calls: list[CallAudio], legs: int, protocol: str, frame_ms: int, stagger_s: float, seconds: float,
         tag: str) -> list[CallRun]:
    """legs/2 calls (a lone leg for an odd count), starts spread evenly over stagger_s."""
    n_calls = (legs + 1) // 2
    t0 = time.monotonic() + 1.0
    runs = []
    frames = int(seconds * 1000) // frame_ms
    for i in range(n_calls):
        audio = calls[i % len(calls)]
        prefix = {"twilio": "tw-", "listen": "dg-"}.get(protocol, "aa-")
        run = CallRun(f"{prefix}{tag}-{i}", audio, t0 + i * stagger_s / max(1, n_calls))
        roles = ("agent", "customer") if 2 * (i + 1) <= legs else ("agent",)
        if protocol == "twilio":
            roles = ("customer", "agent")  # one stream carries both tracks
        for role in roles:
            run.legs[role] = Leg(role, audio.turns[role], frames, np.full(frames, np.nan))
        runs.append(run)
    return runs


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _turn_of(turns: list[Turn], start_ms: int, end_ms: int) -> int | None:
    best, who = 0.0, None
    for i, t in enumerate(turns):
        o = _overlap(start_ms / 1000, end_ms / 1000, t.start_s, t.end_s)
        if o > best:
            best, who = o, i
    return who


def analyse(runs: list[CallRun], frame_ms: int, seconds: float, offline: dict[str, dict[str, list[dict]]] | None) -> dict:
    from callscribe.asr.wer import wer

    step = RATE * frame_ms // 1000
    final_lat: list[float] = []
    first_partial: list[float] = []
    missed = measured = refused = started = 0
    refs: list[str] = []
    hyps: list[str] = []
    off_hyps: list[str] = []
    errors = [r.error for r in runs if r.error]
    for run in runs:
        for leg in run.legs.values():
            refused += leg.refused
            started += leg.started
            if not leg.started:
                continue
            by_turn: dict[int, list[float]] = {}
            text_of: dict[int, list[str]] = {}
            for arrival, s, e, text in leg.finals:
                i = _turn_of(leg.turns, s, e)
                if i is not None:
                    by_turn.setdefault(i, []).append(arrival)
                    text_of.setdefault(i, []).append(text)
            partial_of: dict[int, float] = {}
            for arrival, s, e in leg.partials:
                i = _turn_of(leg.turns, s, e)
                if i is not None:
                    partial_of[i] = min(arrival, partial_of.get(i, arrival))
            sent_s = leg.frames * frame_ms / 1000
            full = []
            for i, t in enumerate(leg.turns):
                if t.end_s > sent_s - 0.8:
                    continue  # its endpoint would come from finishStream, not from silence
                full.append(i)
                measured += 1
                end_sent = leg.sent[_frame_of(t.end_s, step)]
                if i in by_turn and not np.isnan(end_sent):
                    final_lat.append(max(by_turn[i]) - float(end_sent))
                else:
                    missed += 1
                start_sent = leg.sent[_frame_of(t.start_s, step)]
                if i in partial_of and not np.isnan(start_sent):
                    first_partial.append(partial_of[i] - float(start_sent))
            refs.append(" ".join(leg.turns[i].text for i in full))
            hyps.append(" ".join(" ".join(text_of.get(i, [])) for i in full))
            if offline is not None:
                utts = offline[run.audio.key][leg.role]
                off_hyps.append(" ".join(u["text"] for u in utts
                                         if _turn_of(leg.turns, u["start_ms"], u["end_ms"]) in full))

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "legs_started": started, "refused": refused, "turns": measured, "missed": missed,
        "final_mean_s": round(float(np.mean(final_lat)), 3) if final_lat else None,  # vs the server's own mean
        "final_p50_s": pct(final_lat, 50), "final_p95_s": pct(final_lat, 95), "final_max_s": pct(final_lat, 100),
        "first_partial_p50_s": pct(first_partial, 50), "turns_with_partial": len(first_partial),
        "wer_stream": round(wer(refs, hyps), 4) if refs else None,
        "wer_offline": round(wer(refs, off_hyps), 4) if refs and offline is not None else None,
        "errors": errors[:5],
    }


async def scrape(http: Any, server: Server) -> dict[str, float]:
    """The server's Prometheus counters (name{labels} -> value); {} if it has no /metrics."""
    try:
        r = await http.get(server.base + "/metrics")
    except Exception:
        return {}
    out = {}
    for line in r.text.splitlines() if r.status_code == 200 else []:
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def _delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: round(v - before.get(k, 0.0), 2) for k, v in after.items() if k.startswith(prefix)}


def _mean(before: dict[str, float], after: dict[str, float], histogram: str) -> float | None:
    n = after.get(histogram + "_count", 0.0) - before.get(histogram + "_count", 0.0)
    return round((after.get(histogram + "_sum", 0.0) - before.get(histogram + "_sum", 0.0)) / n, 3) if n else None


async def run_step(server: Server, calls: list[CallAudio], legs: int, protocol: str, frame_ms: int,
                   args: argparse.Namespace, offline: dict | None) -> dict:
    import httpx
    import psutil

    tag = f"{legs}-{protocol}-{frame_ms}-{int(time.time())}"
    runs = plan(calls, legs, protocol, frame_ms, args.stagger, args.seconds, tag)
    meter = ProcessMeter(server.pid)
    me = psutil.Process()
    c0, w0 = sum(me.cpu_times()[:2]), time.monotonic()
    meter.start()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=HANG_S, limits=limits) as http:
        before = await scrape(http, server)
        call = {"twilio": twilio_call, "listen": listen_call}.get(protocol, asapp_call)
        results = await asyncio.gather(*(call(server, http, r, frame_ms) for r in runs), return_exceptions=True)
        after = await scrape(http, server)
    for run, res in zip(runs, results):
        if isinstance(res, BaseException):
            run.error = run.error or f"{type(res).__name__}: {res}"
    server_use = meter.stop()
    client_cpu = (sum(me.cpu_times()[:2]) - c0) / (time.monotonic() - w0)
    out = {"legs": legs, "protocol": protocol, "frame_ms": frame_ms, "seconds": args.seconds,
           **analyse(runs, frame_ms, args.seconds, offline),
           "server_cpu_cores": round(server_use["cpu_cores"], 2) if server_use["cpu_cores"] is not None else None,
           "server_rss_mb": round(server_use["rss_mb"]) if server_use["rss_mb"] is not None else None,
           "client_cpu_cores": round(client_cpu, 2),
           # What the server says about itself, where it says it (not needed for the figures above).
           "server_asr_busy_s": _delta(before, after, "callscribe_asr_busy_seconds_total"),
           "server_refused": _delta(before, after, "callscribe_admission_refused_total"),
           "server_finals_speculated": _delta(before, after, "callscribe_finals_speculated_total").get("", None),
           "server_finals": _delta(before, after, "callscribe_finals_total").get("", None),
           "server_final_latency_mean_s": _mean(before, after, "callscribe_final_latency_seconds")}
    return out


# -- offline reference ------------------------------------------------------------------------------


def offline_transcripts(calls: list[CallAudio]) -> dict[str, dict[str, list[dict]]]:
    """`callscribe transcribe --channels split --json` of each call variant's two 8 kHz tracks, cached
    on disk by the audio's hash (the same model the server uses, unless CALLSCRIBE_MODEL differs)."""
    from callscribe.testing.speech import cache_dir

    out = {}
    for c in calls:
        stereo = np.stack([c.pcm["customer"], c.pcm["agent"]], axis=1).astype("<i2")
        digest = hashlib.sha256(stereo.tobytes() + os.environ.get("CALLSCRIBE_MODEL", "").encode()).hexdigest()[:24]
        cached = cache_dir() / f"offline-{digest}.json"
        if not cached.exists():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "call.wav"
                with wave.open(str(path), "wb") as w:
                    w.setnchannels(2)
                    w.setsampwidth(2)
                    w.setframerate(RATE)
                    w.writeframes(stereo.tobytes())
                res = subprocess.run([sys.executable, "-m", "callscribe", "transcribe", str(path), "--json",
                                      "--channels", "split", "--no-progress"], capture_output=True, text=True, check=True)
            cached.write_text(res.stdout)
        utts = json.loads(cached.read_text())["utterances"]
        by_role: dict[str, list[dict]] = {"customer": [], "agent": []}
        for u in utts:
            by_role["customer" if u["speaker"].endswith("0") else "agent"].append(u)
        out[c.key] = by_role
    return out


# -- main -------------------------------------------------------------------------------------------


def _spin(seconds: float, out: Any) -> None:
    t, c = time.monotonic(), time.process_time()
    while time.monotonic() - t < seconds:
        pass
    out.put(time.process_time() - c)


def cpu_available(seconds: float = 2.0) -> float:
    """Cores that one busy process per CPU actually gets now (below the CPU count when the machine
    is shared with other work): the figures of a run are only as good as this."""
    import multiprocessing

    q: Any = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_spin, args=(seconds, q)) for _ in range(os.cpu_count() or 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return round(sum(q.get() for _ in procs) / seconds, 2)


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_row(r: dict) -> None:
    legs = r["legs"] if r["legs_started"] + r["refused"] == r["legs"] else f"{r['legs']} ({r['legs_started'] + r['refused']} opened)"
    print(f"| {legs} | {r['protocol']} {r['frame_ms']} ms | {fmt(r['final_p50_s'])} / {fmt(r['final_p95_s'])} / "
          f"{fmt(r['final_max_s'])} s | {fmt(r['first_partial_p50_s'])} s | {r['missed']}/{r['turns']} | {r['refused']} | "
          f"{fmt(r['server_cpu_cores'])} | {fmt(r['server_rss_mb'], '.0f')} MB | {fmt(r['client_cpu_cores'])} | "
          f"{fmt(r['wer_stream'], '.1%')} / {fmt(r['wer_offline'], '.1%')} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--legs", default="1,8,16,24,48", help="comma-separated leg counts, one step each")
    p.add_argument("--seconds", type=float, default=40.0, help="audio per leg per step")
    p.add_argument("--protocol", default="asapp", help="asapp, twilio, listen, comma-separated")
    p.add_argument("--frame-ms", default="100", help="frame sizes in ms, comma-separated (e.g. 100,20)")
    p.add_argument("--stagger", type=float, default=8.0, help="spread call starts over this many seconds")
    p.add_argument("--url", help="target a running server instead of starting one")
    p.add_argument("--api-key", default=":".join(API_KEY), help="ID:SECRET for --url")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its CPU and RSS")
    p.add_argument("--no-wer", action="store_true", help="skip the offline reference transcription")
    p.add_argument("--pause", type=float, default=3.0, help="idle seconds between steps")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    ladder = [int(x) for x in args.legs.split(",") if x]
    protocols = [x for x in args.protocol.split(",") if x]
    frame_sizes = [int(x) for x in args.frame_ms.split(",") if x]
    if any(x not in ("asapp", "twilio", "listen") for x in protocols):
        p.error("--protocol takes asapp, twilio and/or listen")
    if any(RATE * f % 1000 for f in frame_sizes):
        p.error("--frame-ms must be a whole number of 8 kHz samples")

    print("synthesising calls (cached on disk) ...", file=sys.stderr, flush=True)
    calls = make_calls(args.seconds)
    offline = None
    if not args.no_wer:
        print("offline reference transcripts (callscribe transcribe, cached) ...", file=sys.stderr, flush=True)
        offline = offline_transcripts(calls[:max(1, (max(ladder) + 1) // 2)])
    key_id, _, secret = args.api_key.partition(":")
    server = Server(args.url, (key_id, secret), args.server_pid)
    server.start()
    load = os.getloadavg()
    available = cpu_available()
    print(f"server {server.url} (pid {server.pid}); {os.cpu_count()} CPUs ({available:g} cores free for a busy "
          f"process per CPU at start), load average {load[0]:.2f}; "
          f"{args.seconds:g} s per leg, calls started over {args.stagger:g} s, real-time pacing, 8 kHz")
    print("| legs | wire | final p50 / p95 / max | 1st partial p50 | missed | refused | server CPU | server RSS | "
          "client CPU | WER stream / offline |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    try:
        for n in ladder:
            for protocol in protocols:
                for frame_ms in frame_sizes:
                    r = asyncio.run(run_step(server, calls, n, protocol, frame_ms, args, offline))
                    r["load_avg_1m"] = round(os.getloadavg()[0], 2)
                    r["cpu_available_at_start"] = available
                    results.append(r)
                    print_row(r)
                    if r["server_asr_busy_s"] or r["server_refused"]:
                        print(f"    server: decode busy s {r['server_asr_busy_s']}, refused {r['server_refused']}, "
                              f"its own mean final latency {r['server_final_latency_mean_s']} s, "
                              f"{r['server_finals_speculated']} of {r['server_finals']} finals speculated", file=sys.stderr)
                    for e in r["errors"]:
                        print(f"    error: {e}", file=sys.stderr)
                    time.sleep(args.pause)
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "server": server.url,
                                               "cpus": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
