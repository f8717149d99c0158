"""POST /v1/listen: Deepgram's pre-recorded transcription, for post-call work through the same clients.

The audio is the body (any container ffmpeg reads, or raw audio with `encoding` and `sample_rate`),
or `{"url": ...}` naming a URL under one of CALLSCRIBE_LISTEN_URL_PREFIXES (a local file server; no
other URL is fetched). The request is a call like a live one (namespace "deepgram", guid = the
first `tag` or the request id, a participant per channel with multichannel): the audio is fed
through the registry faster than real time, its finals are stored and webhooked, and the answer is
Deepgram's batch JSON (`metadata`, `results.channels[].alternatives[]`, `results.utterances` when
`utterances=true`). A `callback` is validated as on the live socket, and the answer still comes
synchronously (the webhook carries the finals as well).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import tempfile
import uuid
from typing import Any
from urllib.parse import urlsplit

import av
import httpx
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from callscribe.api import listen_wire
from callscribe.api.errors import ApiError
from callscribe.api.limits import read_body, read_capped, read_json
from callscribe.audio.codecs import float32_to_int16
from callscribe.audio.fileio import AudioReadError, load_audio
from callscribe.audio.rates import MODEL_RATE
from callscribe.calls.events import CallEvent, UtteranceEvent
from callscribe.calls.media import MediaRefused
from callscribe.calls.registry import RegistryError
from callscribe.api import listen_messages as msgs
from callscribe.api.listen_audio import AudioDecoder, split_tracks
from callscribe.api.listen_params import MAX_CHANNELS, ListenOptions
from callscribe.services import Services

router = APIRouter(tags=["Deepgram-compatible listen API"])

FEED_CHUNK_S = 1  # audio is fed a second at a time, yielding to the event loop in between


def _url_allowed(url: str, prefixes: str) -> bool:
    """Whether `url` lies under one of the configured prefixes: the same scheme, host and port, and a
    path under the prefix's path on a "/" boundary (a bare string prefix would let
    http://files.local admit http://files.local.example or http://files.local@elsewhere)."""
    try:
        u = urlsplit(url)
        for prefix in (p.strip() for p in prefixes.split(",") if p.strip()):
            p = urlsplit(prefix)
            if (u.scheme.lower(), u.hostname, u.port) != (p.scheme.lower(), p.hostname, p.port) or u.username:
                continue
            base = p.path.rstrip("/")
            if u.path == base or u.path.startswith(base + "/"):
                return True
    except ValueError:
        return False
    return False


def _duration_s(audio: bytes) -> float | None:
    """The container's own idea of its length, read before anything is decoded; None if it has none."""
    try:
        with av.open(io.BytesIO(audio), mode="r") as container:
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, ValueError):
        return None


async def _fetch(url: str, max_bytes: int) -> bytes:
    try:
        async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ApiError(400, None, f"Failed to fetch the url: HTTP {response.status_code}")
                return await read_capped(response.aiter_bytes(), max_bytes, "The audio at the url is")
    except httpx.HTTPError as exc:
        raise ApiError(400, None, f"Failed to fetch the url: {type(exc).__name__}") from None


def decode(audio: bytes, opts: ListenOptions) -> tuple[list[np.ndarray], int]:
    """(one int16 array per track, sample rate). Raw audio needs encoding and sample_rate;
    anything else is a container decoded by ffmpeg (to 16 kHz)."""
    if opts.encoding is not None:
        return split_tracks(AudioDecoder(opts).decode(audio), opts.multichannel), opts.sample_rate or MODEL_RATE
    with tempfile.NamedTemporaryFile(suffix=".audio") as fh:
        fh.write(audio)
        fh.flush()
        tracks = load_audio(fh.name, split_channels=opts.multichannel)
    return [float32_to_int16(t) for t in tracks], MODEL_RATE


async def transcribe(services: Services, tenant: str, guid: str, opts: ListenOptions, request_id: str,
                     tracks: list[np.ndarray], rate: int) -> tuple[dict[int, list[UtteranceEvent]], str | None]:
    """Run the tracks through the registry as one call; its finals by channel, and the call id."""
    registry = services.registry
    assert registry is not None
    finals: dict[int, list[UtteranceEvent]] = {}
    channel_of_stream: dict[str, int] = {}

    def collect(ev: CallEvent) -> None:
        if isinstance(ev, UtteranceEvent) and ev.kind == "final" and ev.stream_id in channel_of_stream \
                and ev.text.strip():
            finals.setdefault(channel_of_stream[ev.stream_id], []).append(ev)

    media = await registry.media_connected(tenant=tenant, namespace=listen_wire.NAMESPACE, guid=guid,
                                           tracks=listen_wire.track_specs(opts), source="listen-prerecorded",
                                           metadata={"request_id": request_id, "model": opts.model})
    unsubscribe = services.bus.subscribe(collect)
    try:
        legs = await registry.start_streaming(tenant, listen_wire.NAMESPACE, guid,
                                              listen_wire.stream_params(opts, request_id, live=False))
        channel_of_stream.update({leg.stream_id: listen_wire.channel_of(pid) for pid, leg in legs.items()})
        n = max(len(t) for t in tracks)
        for i in range(0, n, FEED_CHUNK_S * rate):
            for c, pcm in enumerate(tracks):
                await media.audio(str(c), pcm[i:i + FEED_CHUNK_S * rate], rate)
            await asyncio.sleep(0)
        await registry.stop_streaming(tenant, listen_wire.NAMESPACE, guid)
        call = registry.find(tenant, guid, listen_wire.NAMESPACE)
        return finals, call.ref.call_id if call is not None else None
    finally:
        await media.end("finished")
        unsubscribe()


@router.post(listen_wire.PATH)
async def listen(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    settings = services.settings
    request_id = str(uuid.uuid4())
    try:
        key, opts = listen_wire.admit(request.app, listen_wire.credentials(request.headers),
                                      request.query_params.multi_items())
    except listen_wire.Denied as denied:
        raise ApiError(denied.status, None, denied.message) from None
    if services.registry is None or not services.ready.is_set():
        raise ApiError(503, None, "The speech model is still loading.")

    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        body = await read_json(request, settings.max_body_bytes)
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str):
            raise ApiError(400, None, "The JSON body must be {\"url\": \"...\"}")
        if not _url_allowed(url, settings.listen_url_prefixes):
            raise ApiError(400, None, "The url is not one this server may fetch (CALLSCRIBE_LISTEN_URL_PREFIXES)")
        audio = await _fetch(url, settings.listen_max_upload_bytes)
    else:
        audio = await read_body(request, settings.listen_max_upload_bytes)
    if not audio:
        raise ApiError(400, None, "The request has no audio.")
    # Compressed audio decodes to far more memory than it takes on the wire: judge it by its length.
    length = len(audio) / (opts.sample_rate or MODEL_RATE) / 2 / opts.tracks if opts.encoding else _duration_s(audio)
    if length is not None and length > settings.max_call_s:
        raise ApiError(413, None, f"The audio is longer than this server takes ({settings.max_call_s:.0f} s)")
    try:
        tracks, rate = await asyncio.get_running_loop().run_in_executor(None, decode, audio, opts)
    except AudioReadError as exc:
        raise ApiError(400, None, f"Bad Request: failed to process audio: {exc}") from None
    if opts.multichannel:
        if len(tracks) > MAX_CHANNELS:
            raise ApiError(400, None, f"Bad Request: at most {MAX_CHANNELS} channels")
        opts = dataclasses.replace(opts, channels=len(tracks))
    if not tracks or not max(len(t) for t in tracks):
        raise ApiError(400, None, "Bad Request: failed to process audio: no audio could be decoded")

    guid = listen_wire.call_guid(services.registry, key.tenant, opts, request_id)
    try:
        finals, call_id = await transcribe(services, key.tenant, guid, opts, request_id, tracks, rate)
    except (MediaRefused, RegistryError) as exc:
        refused = listen_wire.refusal(exc)
        raise ApiError(refused.status, None, refused.message) from None
    model = msgs.ModelInfo(opts.model, getattr(services.engine, "description", "whisper"))
    duration = max(len(t) for t in tracks) / rate
    body_out: dict[str, Any] = msgs.prerecorded(finals, opts, request_id, hashlib.sha256(audio).hexdigest(), duration,
                                                model, call_id, utterances=opts.utterances)
    return JSONResponse(body_out, headers={"dg-request-id": request_id})
