"""WS /v1/listen: Deepgram's live streaming API (specs/control-apis.md §D.3), so voice-agent
frameworks whose speech-to-text client speaks it can use callscribe by changing one URL.

Each connection is a call (namespace "deepgram", guid = the first `tag` or the request id) with one
participant per audio channel ("ch0", "ch1", ...; one participant for the mixed-down audio without
multichannel), stored, webhooked and shown in the native API like any other. The query string is
read by listen_params.py and the messages made by listen_messages.py.

Handshake: credentials are our `id:secret` key pairs, as `Authorization: Token id:secret`,
`Bearer id:secret`, or the `token` WebSocket subprotocol (`["token", "id.secret"]`: browsers refuse
':' in a subprotocol, so the first '.' may stand for it). A wrong key gets Deepgram's HTTP 401, a bad
query its HTTP 400, before the upgrade.

Messages: binary frames are audio (linear16/mulaw/alaw interleaved by channel, or, without
`encoding`, a container ffmpeg reads as it streams: WAV, Ogg/Opus, WebM, MP3; listen_audio.py);
`KeepAlive` resets the 10 s timeout; `Finalize` (optionally for one `channel`) flushes the open
utterance: the open interval is stopped, its last finals are sent with
`from_finalize: true` (an empty final when there was nothing to flush), and a new interval starts;
`CloseStream` flushes everything, sends `Metadata` and closes normally. With no audio and no text
message for 10 s the socket closes with 1011 "NET-0001", undecodable audio with 1008 "DATA-0000".

Results: a partial is an interim Results (with interim_results), a final an `is_final` Results
whose `speech_final` is true (unless `endpointing=false` or it came from a Finalize): every engine
final ends an utterance. SpeechStarted (vad_events) precedes the first Results of each utterance;
UtteranceEnd (utterance_end_ms) follows a final once the channel's audio has run that long past its
last word with no voice in it (read from the audio's loudness, since the engine lags the audio), or
comes before the next utterance's first Results when that one starts that long after.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket

from callscribe.api import listen_wire
from callscribe.calls.events import UtteranceEvent
from callscribe.calls.media import MediaCall, MediaRefused
from callscribe.calls.registry import CallRegistry, RegistryError
from callscribe.config import ApiKey
from callscribe.api import listen_messages as msgs
from callscribe.ingest.backchannel import Backchannel
from callscribe.ingest.base import (JsonSender, AdapterError, Close, WebSocketAdapter, admit, close, deny, json_object,
                                    run_session)
from callscribe.api.listen_audio import AudioDecoder, split_tracks
from callscribe.audio.pcm_stream import PushedContainer
from callscribe.api.listen_params import ListenOptions
from callscribe.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["Deepgram-compatible listen API"])

IDLE_TIMEOUT_S = 10.0  # Deepgram's: no audio and no text message for this long closes the socket
VOICE_BLOCK_MS = 20
VOICE_RMS = 0.01 * 32768  # -40 dBFS: louder than a line's hiss, quieter than speech
WORD_TAIL_MS = 250  # a word's last sounds may outlast its end time
VOICE_HISTORY = 30 * 1000 // VOICE_BLOCK_MS  # more than the engine lags behind the audio


@dataclass
class ChannelState:
    """What one channel's messages depend on."""

    position_ms: float = 0.0  # audio received on this channel
    spoke: int | None = None  # the utterance whose SpeechStarted went out
    last_word_end: int | None = None  # a final waiting for its UtteranceEnd
    finalized: int = 0  # finals sent during the Finalize in progress
    voiced: deque[float] = field(default_factory=lambda: deque(maxlen=VOICE_HISTORY))  # starts of loud blocks

    def hear(self, pcm: np.ndarray, rate: int) -> None:
        """Move the channel on by `pcm`, noting where it is loud: the engine's finals lag the audio,
        so whether speech resumed after a final is read from the audio itself."""
        n = max(1, rate * VOICE_BLOCK_MS // 1000)
        blocks = len(pcm) // n
        if blocks:
            rms = np.sqrt(np.mean(np.square(pcm[:blocks * n].reshape(blocks, n).astype(np.float32)), axis=1))
            self.voiced.extend(self.position_ms + i * n * 1000.0 / rate for i in np.flatnonzero(rms > VOICE_RMS))
        self.position_ms += len(pcm) * 1000.0 / rate

    def utterance_over(self, gap_ms: int) -> bool:
        """The audio has run `gap_ms` past the last word with no voice after it."""
        if self.last_word_end is None or self.position_ms < self.last_word_end + gap_ms:
            return False
        first = next((t for t in self.voiced if t > self.last_word_end + WORD_TAIL_MS), None)
        return first is None or first >= self.last_word_end + gap_ms


class ListenSession(WebSocketAdapter):
    """One live listen connection: a call with a participant per channel and its Results."""

    name = "listen"
    log = log
    max_message_bytes = 4 << 20

    def __init__(self, ws: WebSocket, services: Services, key: ApiKey, opts: ListenOptions, request_id: str):
        assert services.registry is not None
        self.ws = ws
        self.registry: CallRegistry = services.registry
        self.bus = services.bus
        self.tenant = key.tenant
        self.opts = opts
        self.request_id = request_id
        self.guid = listen_wire.call_guid(self.registry, self.tenant, opts, request_id)
        engine = services.engine
        self.model = msgs.ModelInfo(opts.model, getattr(engine, "description", "whisper"))
        self.idle_timeout_s = IDLE_TIMEOUT_S
        self.max_duration_s = services.settings.max_call_s
        self.drainers = services.drainers
        self.decoder = AudioDecoder(opts) if opts.encoding is not None else None
        self.container: PushedContainer | None = None
        self._pump: asyncio.Task[None] | None = None
        self.channels = [ChannelState() for _ in range(opts.tracks)]
        self.backchannels: list[Backchannel] = []
        self.media: MediaCall | None = None
        self.call_id: str | None = None
        self.finalizing: set[int] = set()  # channels whose Finalize is being flushed
        self._sha = hashlib.sha256()
        self.send = JsonSender(ws, "listen socket")
        self._feed_lock = asyncio.Lock()  # a Finalize's stop and restart see no audio in between
        self._ended = False

    @property
    def label(self) -> str:
        return self.guid

    def timeout_error(self, started: bool, seconds: float) -> AdapterError:
        return AdapterError("NET-0001: did not receive audio data or a text message within the timeout window",
                            Close.INTERNAL)

    # -- set-up ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the media and start transcribing; raises RegistryError or MediaRefused."""
        self.media = await self.registry.media_connected(
            tenant=self.tenant, namespace=listen_wire.NAMESPACE, guid=self.guid,
            tracks=listen_wire.track_specs(self.opts), source="listen",
            metadata={"request_id": self.request_id, "model": self.opts.model})
        self.backchannels = [Backchannel(self.bus, self._sender(c), finals_only=False) for c in range(self.opts.tracks)]
        await self._start([listen_wire.participant_id(c) for c in range(self.opts.tracks)])
        if self.decoder is None:
            self.container = PushedContainer(self.opts.tracks, name="listen-container")
            self._pump = asyncio.create_task(self._pump_container(), name="listen-container-pump")
        self.started = True
        self.drainers.add(self.drain)

    async def _start(self, participants: list[str]) -> None:
        legs = await self.registry.start_streaming(self.tenant, listen_wire.NAMESPACE, self.guid,
                                                   listen_wire.stream_params(self.opts, self.request_id),
                                                   participants=participants)
        call = self.registry.find(self.tenant, self.guid, listen_wire.NAMESPACE)
        self.call_id = call.ref.call_id if call is not None else None
        for pid, leg in legs.items():
            self.backchannels[listen_wire.channel_of(pid)].stream_id = leg.stream_id

    async def _stop(self, participants: list[str] | None) -> None:
        try:
            await self.registry.stop_streaming(self.tenant, listen_wire.NAMESPACE, self.guid, participants=participants)
        except RegistryError:
            pass  # already stopped (the media ended first)
        for bc in self.backchannels:
            await bc.drain()

    # -- sending ----------------------------------------------------------------------------------


    def _sender(self, channel: int) -> Any:
        async def send(ev: UtteranceEvent) -> None:
            await self._deliver(channel, ev)
        return send

    async def _deliver(self, c: int, ev: UtteranceEvent) -> None:
        st, o = self.channels[c], self.opts
        if not ev.text.strip():
            if ev.kind == "partial" and o.interim_results:  # a withdrawn partial: it was noise
                await self.send(msgs.results(ev, c, o, self.request_id, self.model, is_final=False))
            return
        if st.last_word_end is not None:
            if o.utterance_end_ms is not None and ev.start_ms - st.last_word_end >= o.utterance_end_ms:
                await self.send(msgs.utterance_end(c, o, st.last_word_end))
            st.last_word_end = None  # speech went on (or its UtteranceEnd just went out)
        if o.vad_events and st.spoke != ev.utterance:
            st.spoke = ev.utterance
            await self.send(msgs.speech_started(c, o, ev.start_ms))
        if ev.kind == "partial":
            if o.interim_results:
                await self.send(msgs.results(ev, c, o, self.request_id, self.model, is_final=False))
            return
        await self.send(msgs.results(ev, c, o, self.request_id, self.model, is_final=True,
                                     speech_final=o.speech_final and c not in self.finalizing,
                                     from_finalize=c in self.finalizing))
        if c in self.finalizing:
            st.finalized += 1
        if o.utterance_end_ms is not None:
            words = msgs.words_of(ev)
            st.last_word_end = words[-1].end_ms if words else ev.end_ms
            await self._utterance_ends()

    async def _utterance_ends(self) -> None:
        """UtteranceEnd for channels whose audio has run utterance_end_ms past their last word."""
        gap = self.opts.utterance_end_ms
        if gap is None:
            return
        for c, st in enumerate(self.channels):
            if st.last_word_end is not None and st.utterance_over(gap):
                end, st.last_word_end = st.last_word_end, None
                await self.send(msgs.utterance_end(c, self.opts, end))

    # -- messages ---------------------------------------------------------------------------------

    async def on_bytes(self, data: bytes) -> bool:
        if not data:
            return False
        self._sha.update(data)
        if self.container is not None:
            if not self.container.write(data):
                raise AdapterError("audio arrives far faster than it can be decoded", Close.TRY_LATER)
        elif self.decoder is not None:
            await self._feed(self.decoder.decode(data), self.decoder.rate)
        return False

    async def _feed(self, frames: np.ndarray, rate: int) -> None:
        if not len(frames) or self.media is None:
            return
        for c, pcm in enumerate(split_tracks(frames, self.opts.multichannel)):
            await self.media.audio(str(c), pcm, rate)
            self.channels[c].hear(pcm, rate)
        await self._utterance_ends()

    async def _pump_container(self) -> None:
        """Feed what the container's decoder thread hands over; undecodable audio closes the socket."""
        assert self.container is not None
        while True:
            item = await self.container.out.get()
            if item is None:
                return
            if isinstance(item, str):
                log.info("listen %s: %s", self.guid, item)
                await close(self.ws, Close.POLICY, f"DATA-0000: {item}")
                return
            async with self._feed_lock:
                await self._feed(item.T, self.container.rate)

    async def on_text(self, text: str) -> bool:
        try:
            msg = json_object(text)
        except AdapterError as exc:
            await self.send({"type": "Error", "variant": "SchemaError", "description": exc.reason,
                             "message": text[:200]})
            return False
        kind = msg.get("type")
        if kind == "KeepAlive":
            return False
        if kind == "Finalize":
            channel = msg.get("channel")
            if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool)
                                        or not 0 <= channel < self.opts.tracks):
                await self.send({"type": "Error", "variant": "SchemaError",
                                 "description": "Finalize channel out of range", "message": text[:200]})
                return False
            await self.finalize(None if channel is None else [channel])
            return False
        if kind == "CloseStream":
            await self.close_stream()
            return True
        if kind == "Configure":
            code = "CONFIGURE_KEYTERMS_NOT_SUPPORTED" if msg.get("keyterms") is not None \
                else "CONFIGURE_INTERNAL_ERROR"
            await self.send({"type": "ConfigureFailure", "request_id": self.request_id, "code": code,
                             "description": "this server does not change a stream's settings mid-stream"})
            return False
        await self.send({"type": "Error", "variant": "SchemaError",
                         "description": f"unknown message type {str(kind)[:40]!r}", "message": text[:200]})
        return False

    async def finalize(self, channels: list[int] | None) -> None:
        """Flush the open utterance of these channels (all by default) and carry on transcribing."""
        chans = channels if channels is not None else list(range(self.opts.tracks))
        ids = [listen_wire.participant_id(c) for c in chans]
        for c in chans:
            self.channels[c].finalized = 0
        async with self._feed_lock:
            self.finalizing = set(chans)
            try:
                await self._stop(ids)
                for c in chans:
                    if not self.channels[c].finalized:  # nothing was open: say so, so no client waits for it
                        at = int(self.channels[c].position_ms)
                        await self.send(msgs.results(None, c, self.opts, self.request_id, self.model, is_final=True,
                                                     from_finalize=True, start_ms=at, end_ms=at))
            finally:
                self.finalizing = set()
            try:
                await self._start(ids)
            except RegistryError as exc:  # shutting down, say: tell the client in its protocol, then close
                await self.send({"type": "Error", "variant": "ServerError",
                                 "description": f"transcription could not go on: {type(exc).__name__}"})
                raise AdapterError("transcription could not go on after Finalize", Close.TRY_LATER) from None

    async def close_stream(self) -> None:
        if self.container is not None and self._pump is not None:  # decode what was sent, then flush
            self.container.finish()
            await self._pump
        await self._stop(None)
        await self._utterance_ends()
        duration = max((st.position_ms for st in self.channels), default=0.0) / 1000.0
        await self.send(msgs.metadata(self.request_id, self._sha.hexdigest(), duration, self.opts, self.model,
                                      self.call_id))

    async def drain(self) -> None:
        """The server is stopping: the last finals and the Metadata, then close as going away."""
        if not self._ended:
            await self.close_stream()
            await close(self.ws, Close.GOING_AWAY, "service shutting down")

    async def end(self, reason: str) -> None:
        self.drainers.discard(self.drain)
        if self._ended:
            return
        self._ended = True
        if self.container is not None:
            self.container.finish()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        try:
            if self.started:
                await self._stop(None)
            if self.media is not None:
                await self.media.end(reason)
        finally:
            for bc in self.backchannels:
                bc.close()


def _credentials(ws: WebSocket) -> tuple[str | None, str | None, str | None]:
    """(id, secret, subprotocol to answer with) from the headers or the `token` subprotocol."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    if "authorization" not in ws.headers and len(offered) >= 2 and offered[0].lower() == "token":
        key = offered[1]
        api_id, sep, secret = key.partition(":") if ":" in key else key.partition(".")
        return (api_id, secret, offered[0]) if sep else (None, None, None)
    return (*listen_wire.credentials(ws.headers), None)


async def _deny(ws: WebSocket, status: int, message: str, request_id: str) -> None:
    """Refuse the upgrade in Deepgram's shape, with its headers."""
    await deny(ws, status, message, response=listen_wire.error_response(status, message, request_id))


@router.websocket(listen_wire.PATH)
async def listen(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    request_id = str(uuid.uuid4())
    api_id, secret, subprotocol = _credentials(ws)
    try:
        key, opts = listen_wire.admit(ws.app, (api_id, secret), ws.query_params.multi_items())
        if services.registry is None:
            raise listen_wire.Denied(503, "The service is starting.")
    except listen_wire.Denied as denied:
        await _deny(ws, denied.status, denied.message, request_id)
        return
    slot = await admit(ws, services.connections,
                       refuse=lambda reason: _deny(ws, 503, f"Service unavailable: {reason}.", request_id))
    if slot is None:  # over the process's media-socket limits
        return
    session = ListenSession(ws, services, key, opts, request_id)
    try:
        await session.open()
        await ws.accept(subprotocol=subprotocol, headers=[(b"dg-request-id", request_id.encode())])
    except (MediaRefused, RegistryError) as exc:
        slot.release()
        await session.end("refused")
        refused = listen_wire.refusal(exc)
        await _deny(ws, refused.status, refused.message, request_id)
        return
    except BaseException:
        slot.release()
        await session.end("closed by the peer")
        raise
    await run_session(ws, session, slot)
