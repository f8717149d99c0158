"""memories.ai-style push WebSocket: WS /serve/ws/v2/audio-stream (control-apis.md §B.5).

The client pushes binary audio and gets AssemblyAI-v3-style messages back, as memories.ai relays
the provider's: `Begin` on connect, `Turn` for each partial (`end_of_turn` false) and final
(`end_of_turn` true, `words` with times in ms), `Termination` after the client's
`{"type": "Terminate"}`, then a normal close.

Query: `provider` (assemblyai | elevenlabs, required), the key as `api_key=id:secret` (or the
`Authorization` header), `encoding` of the binary frames: `pcm_s16le` (default) or `pcm_mulaw`,
mono at `sample_rate` (default 16000), or `container`: any file format FFmpeg reads from a pipe
(MP3, Ogg, WebM, WAV, ...), decoded while it arrives (a frame it cannot decode closes the socket
with 1007); `language_code` (default en); other parameters are accepted and ignored. Handshake refusals are
HTTP answers in the surface's envelope: 401 no or bad key, 400 missing or bad provider or
parameters, 503 the model is not loaded or there is no capacity. One connection is one task
(namespace "audio-stream-ws"); its transcripts go back on the socket only, not to the webhook.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import numpy as np
from fastapi import APIRouter, WebSocket

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.memories_wire import PATH_PREFIXES, PROVIDERS, SURFACE, envelope
from callscribe.audio.codecs import ulaw_decode
from callscribe.audio.pcm_stream import RATE, PushedContainer
from callscribe.calls.events import UtteranceEvent
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MediaCall, MediaRefused, Participant, TrackSpec
from callscribe.calls.registry import CallRegistry, NoCapacity, NotReady, RegistryError, UnsupportedLanguage
from callscribe.ingest.backchannel import Backchannel
from callscribe.ingest.base import (JsonSender, AdapterError, Close, WebSocketAdapter, admit, close, deny, json_object,
                                    run_session)
from callscribe.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["memories.ai audio stream"])

PATH = PATH_PREFIXES[1]
NAMESPACE = "audio-stream-ws"
ENCODINGS = ("pcm_s16le", "pcm_mulaw", "container")
RATES = range(8000, 48001)
MAX_SESSION_S = 3 * 3600


class PushStream(WebSocketAdapter):
    """One connection: one speaker's audio in, its Turns out."""

    name = "audio-stream push"
    log = log
    idle_timeout_s = 60.0

    def __init__(self, ws: WebSocket, registry: CallRegistry, services: Services, tenant: str, rate: int,
                 encoding: str = "pcm_s16le"):
        self.ws = ws
        self.encoding = encoding
        self.decoder: PushedContainer | None = None
        self._pump: asyncio.Task[str | None] | None = None
        self.registry = registry
        self.bus = services.bus
        self.tenant = tenant
        self.rate = rate
        self.session_id = str(uuid.uuid4())
        self.media: MediaCall | None = None
        self.backchannel: Backchannel | None = None
        self.opened = time.monotonic()
        self.audio_s = 0.0
        self._odd = b""
        self.send = JsonSender(ws, "push stream")
        self._ended = False

    @property
    def label(self) -> str:
        return self.session_id

    async def begin(self, params: StreamParams) -> None:
        """Connect the media and start transcription; AdapterError when it cannot."""
        try:
            self.media = await self.registry.media_connected(
                tenant=self.tenant, namespace=NAMESPACE, guid=self.session_id,
                tracks=[TrackSpec("speaker", Participant("speaker", "speaker"))], source="audio-stream-ws")
            self.backchannel = Backchannel(self.bus, self._send_turn, finals_only=False)
            legs = await self.registry.start_streaming(self.tenant, NAMESPACE, self.session_id, params)
        except (NoCapacity, NotReady):
            raise AdapterError("no transcription capacity available", Close.TRY_LATER) from None
        except MediaRefused as exc:
            raise AdapterError(exc.reason, Close.TRY_LATER if exc.capacity else Close.POLICY) from None
        except RegistryError as exc:  # shutting down, a bad identity: the session cannot start
            raise AdapterError(f"transcription cannot start: {type(exc).__name__}", Close.TRY_LATER) from None
        self.backchannel.stream_id = legs["speaker"].stream_id
        if self.encoding == "container":
            self.decoder = PushedContainer(1, name="push-decoder")
            self._pump = asyncio.create_task(self._pump_container(), name="push-container-pump")
        self.started = True
        await self.send({"type": "Begin", "id": self.session_id, "expires_at": int(time.time() + MAX_SESSION_S)})


    async def _send_turn(self, ev: UtteranceEvent) -> None:
        final = ev.kind == "final"
        words = [{"text": w.text, "start": w.start_ms, "end": w.end_ms, "confidence": w.confidence,
                  "word_is_final": True} for w in (ev.words or ())] if final else \
            [{"text": t, "word_is_final": False} for t in ev.text.split()]
        await self.send({"type": "Turn", "turn_order": ev.utterance, "turn_is_formatted": final,
                         "end_of_turn": final, "transcript": ev.text, "words": words,
                         "audio_start": ev.start_ms, "audio_end": ev.end_ms})

    async def on_bytes(self, data: bytes) -> bool:
        if time.monotonic() - self.opened > MAX_SESSION_S:
            raise AdapterError("session longer than 3 hours", Close.POLICY)
        if self.decoder is not None:
            if self._pump is not None and self._pump.done():
                self._decoding_failed(self._pump.result())
            if not self.decoder.write(data):
                raise AdapterError("audio arrives faster than it can be decoded", Close.TRY_LATER)
        elif self.encoding == "pcm_mulaw":
            await self._audio(ulaw_decode(data), self.rate)
        else:
            data = self._odd + data
            usable = len(data) - len(data) % 2  # an odd byte waits for the next frame
            self._odd = data[usable:]
            await self._audio(np.frombuffer(data[:usable], dtype="<i2").astype(np.int16), self.rate)
        return False

    async def _pump_container(self) -> str | None:
        """Feed what the decoder hands over; the error message when the audio does not decode."""
        assert self.decoder is not None
        while True:
            item = await self.decoder.out.get()
            if item is None or isinstance(item, str):
                return item
            await self._audio(item[0], self.decoder.rate)

    def _decoding_failed(self, error: str | None) -> None:
        if error is not None:
            raise AdapterError(error, Close.INVALID)

    async def _audio(self, pcm: np.ndarray, rate: int = RATE) -> None:
        if len(pcm) and self.media is not None:
            self.audio_s += len(pcm) / rate
            await self.media.audio("speaker", pcm, rate)

    async def on_text(self, text: str) -> bool:
        msg = json_object(text)
        if msg.get("type") == "Terminate":
            if self.decoder is not None and self._pump is not None:
                self.decoder.finish()
                self._decoding_failed(await self._pump)
            await self._finish()
            await self.send({"type": "Termination", "audio_duration_seconds": round(self.audio_s, 3),
                             "session_duration_seconds": round(time.monotonic() - self.opened, 3)})
            return True
        return False  # ForceEndpoint, UpdateConfiguration, keep-alives: nothing to do

    async def _finish(self) -> None:
        """End the media once: its last finals are published and sent back."""
        if self._ended:
            return
        self._ended = True
        if self.media is not None:
            await self.media.end("finished")
        if self.backchannel is not None:
            await self.backchannel.drain()

    async def end(self, reason: str) -> None:
        if self.decoder is not None:
            self.decoder.finish()  # the decoding thread ends with the bytes it has
        if self._pump is not None:
            self._pump.cancel()
        try:
            if not self._ended and self.media is not None:
                self._ended = True
                await self.media.end(reason)
        finally:
            if self.backchannel is not None:
                self.backchannel.close()


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _handshake(ws: WebSocket, services: Services) -> tuple[str, int, str, StreamParams]:
    """(tenant, sample rate, encoding, params) of the upgrade request, or _Refused."""
    query = ws.query_params
    api_key = query.get("api_key")
    api_id, secret = api_key.partition(":")[::2] if api_key else credentials_from_headers(ws.headers)
    key = authenticate(services.api_keys, api_id, secret)
    if key is None:
        raise _Refused(401, "Unauthorized")
    if query.get("provider") not in PROVIDERS:
        raise _Refused(400, f"provider must be one of {', '.join(PROVIDERS)}")
    encoding = query.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise _Refused(400, f"encoding must be one of {', '.join(ENCODINGS)}")
    rate_text = query.get("sample_rate", "16000")
    if not rate_text.isdigit() or int(rate_text) not in RATES:
        raise _Refused(400, "sample_rate must be an integer from 8000 to 48000")
    language = query.get("language_code") or "en"
    if services.registry is None:
        raise _Refused(503, "The speech model is not loaded yet")
    try:
        services.registry.check_language(language)
    except UnsupportedLanguage:
        raise _Refused(400, f"language_code not supported: {language}") from None
    except NotReady:
        raise _Refused(503, "The speech model is not loaded yet") from None
    params = StreamParams(language=language, detailed_token=True, redaction_output="unredacted", surface=SURFACE,
                          options={"provider": query["provider"]})
    return key.tenant, int(rate_text), encoding, params


@router.websocket(PATH)
async def push_stream(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    try:
        tenant, rate, encoding, params = _handshake(ws, services)
    except _Refused as refused:
        await deny(ws, refused.status, refused.message, envelope(None, refused.status, refused.message))
        return
    assert services.registry is not None  # checked by the handshake
    slot = await admit(ws, services.connections)
    if slot is None:
        return
    await ws.accept()
    adapter = PushStream(ws, services.registry, services, tenant, rate, encoding)
    adapter.max_duration_s = min(MAX_SESSION_S, services.settings.max_call_s)
    try:
        await adapter.begin(params)
    except BaseException as exc:  # whatever stops the start, the media it connected ends
        slot.release()
        await adapter.end(f"refused: {exc}")
        if isinstance(exc, AdapterError):
            await close(ws, exc.code, exc.reason)
            return
        raise
    await run_session(ws, adapter, slot)
