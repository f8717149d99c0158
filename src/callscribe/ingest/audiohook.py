"""Genesys Cloud AudioHook ingest: WS /mg-autotranscribe/v1/genesys-audiohook (protocol version 2).

Genesys is the client: it upgrades (signed; audiohook_auth.py), sends `open` with media offers,
streams interleaved audio in binary frames, pings every few seconds and ends with `close`. One
session is one call: namespace `genesysaudiohook`, guid = the conversationId, tenant = the API
key's; channel `external` carries the customer and `internal` the agent.

Two variants share this code (media-protocols spec §2.4):
- AudioHook Monitor: media only; transcription is started and stopped by the ASAPP control API
  (start-streaming with namespace genesysaudiohook), as for any other media;
- Transcription Connector: an `open` that names a `language` starts transcription itself, and its
  partial and final transcripts go back on the socket as `event` messages with `transcript`
  entities (channelId = the channel's index in the chosen media). `customConfig.redactionOutput`
  ("redacted", the default, or "unredacted", which adds word tokens) picks what Genesys gets, and
  `customConfig.partials: false` sends finals only.

Pause: a `paused` (hold, secure pause) stops transcription like an ASAPP stop-streaming (the
interval closes, its last finals are delivered); `resumed` restarts only what this session itself
started (the connector's transcription), so ASAPP-started transcription needs a new start-streaming
after a pause, just as after a stop. `resumed` and `discarded` place the skipped audio as a gap on
the timeline, so offsets keep counting in Genesys's stream position.

Anything slow (stopping an interval waits for the engine's last finals) runs on a per-session worker
in arrival order, so `ping` is answered at once whatever the engine is doing. Protocol errors end
the session with `disconnect` (reason `error`, or `unauthorized` for a failed upgrade check),
then the client's close transaction is answered with `closed` before the socket closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import APIRouter, WebSocket

from callscribe.audio.codecs import l16_decode, ulaw_decode
from callscribe.calls.events import UtteranceEvent
from callscribe.calls.leg import Leg, StreamParams
from callscribe.calls.media import MediaCall, MediaRefused, Participant, TrackSpec
from callscribe.calls.redaction import REDACTION_OUTPUTS
from callscribe.calls.registry import (AlreadyStarted, AlreadyStopped, CallNotFound, CallRegistry, MediaEnding,
                                       NoCapacity, RegistryError, UnsupportedLanguage)
from callscribe.config import AudioHookKey
from callscribe.ingest import audiohook_auth
from callscribe.ingest import audiohook_messages as wire
from callscribe.ingest.backchannel import Backchannel
from callscribe.ingest.base import (AdapterError, Close, WebSocketAdapter, admit, close, deny, peer_of,
                                    run_session)
from callscribe.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["Genesys AudioHook"])

PATH = "/mg-autotranscribe/v1/genesys-audiohook"
NAMESPACE = "genesysaudiohook"
SURFACE = "asapp"  # connector transcripts also reach the webhook, in the gateway's ASAPP shape
PARTICIPANTS = {"external": Participant("customer", "customer"), "internal": Participant("agent", "agent")}
REQUIRED_HEADERS = ("audiohook-organization-id", "audiohook-session-id", "audiohook-correlation-id")
START_TIMEOUT_S = 10.0  # Genesys sends `open` right after the upgrade (its own open timeout is 5 s)
IDLE_TIMEOUT_S = 60.0  # a live session pings every 5 s even when paused
CLOSE_WAIT_S = 5.0  # after `disconnect`, how long the client gets to start its close transaction
MIN_FAILURE_S = 0.5  # a failed upgrade check is answered no sooner (timing side channel)
MAX_GAP_MS = 4 * 3600 * 1000  # a gap longer than a call is a broken client
START_RETRY_S = 10.0  # how long a connector start retries a refusal for capacity
END_WAIT_S = 130.0  # a stop waits up to the registry's drain timeout for the engine's last finals
MAX_QUEUED_S = 30  # audio held behind a start or stop before the reader waits for it


def unauthorized(reason: str) -> AdapterError:
    return AdapterError(reason, Close.POLICY, status=401)


class AudioHookSession(WebSocketAdapter):
    """One AudioHook session: envelope, open transaction, audio, pause, close."""

    name = "audiohook session"
    log = log
    start_timeout_s = START_TIMEOUT_S
    idle_timeout_s = IDLE_TIMEOUT_S
    max_message_bytes = 8 << 20  # binary frames may be any size; text frames are capped at 64 KiB

    def __init__(self, ws: WebSocket, services: Services, key: AudioHookKey | None, headers: dict[str, str],
                 source: str):
        assert services.registry is not None  # the route refuses before the registry exists
        self.ws = ws
        self.services = services
        self.registry: CallRegistry = services.registry
        self.key = key
        self.headers = headers
        self.source = source
        self.session_id = headers.get("audiohook-session-id") or ""
        self.seq = 0  # ours
        self.clientseq = 0  # the last client seq processed
        self.state = "new"  # new -> active <-> paused -> closing -> closed; or disconnecting
        self.open: wire.Open | None = None
        self.media: wire.Media | None = None
        self.call: MediaCall | None = None
        self.samples = 0  # stream position, in samples per channel, gaps included
        self.place_at: int | None = None  # where the next frame goes after a gap, in samples
        self._rest = b""  # bytes of an incomplete sample frame, kept for the next binary frame
        # Transcription Connector
        self.params: StreamParams | None = None
        self.legs: dict[str, Leg] = {}
        self.backchannels: dict[str, Backchannel] = {}
        self.resume_own = False
        self._send_lock = asyncio.Lock()
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._queued_samples = 0  # audio waiting behind a start or stop
        self._pending = 0  # jobs queued or running
        self.ended = False

    @property
    def label(self) -> str:
        conversation = self.open.conversation_id if self.open else "-"
        return f"{self.session_id or '-'} (conversation {conversation}, from {self.source})"

    # -- sending -------------------------------------------------------------------------------------

    async def send(self, kind: str, parameters: dict[str, Any] | None = None) -> None:
        async with self._send_lock:
            self.seq += 1
            body = wire.server_message(self.session_id, kind, self.seq, self.clientseq, parameters)
            try:
                await self.ws.send_text(json.dumps(body))
            except Exception:  # the peer went away; the session loop sees the disconnect
                log.debug("send on a closed audiohook session", exc_info=True)

    # -- text ----------------------------------------------------------------------------------------

    async def on_text(self, text: str) -> bool:
        msg = wire.parse_message(text)
        if not self.session_id:
            self.session_id = msg.id
        if msg.id != self.session_id:
            raise AdapterError("session id differs from the session's")
        if msg.seq != self.clientseq + 1:
            raise AdapterError(f"seq {msg.seq} does not follow {self.clientseq}")
        self.clientseq = msg.seq
        if msg.serverseq > self.seq:
            raise AdapterError(f"serverseq {msg.serverseq} is ahead of ours ({self.seq})")
        if self.state in ("closing", "closed"):
            if msg.type == "ping":
                await self.send("pong")
            return False  # nothing else matters once the client closed
        if msg.type == "open":
            if self.state != "new":
                raise AdapterError("'open' sent twice")
            await self._open(wire.parse_open(msg.parameters))
            return False
        if self.state == "new":
            if msg.type == "close":  # a close before any open: nothing to flush
                self.state = "closing"
                self._enqueue(self._close)
                return False
            raise AdapterError(f"'{msg.type}' before 'open'")
        await getattr(self, f"_on_{msg.type}")(msg)
        return False

    async def _on_ping(self, msg: wire.ClientMessage) -> None:
        await self.send("pong")

    async def _on_update(self, msg: wire.ClientMessage) -> None:
        language = msg.parameters.get("language")
        if not isinstance(language, str) or not 0 < len(language) <= 64:
            raise AdapterError("'parameters.language' of update must be a language code")
        if self.params is not None and language != self.params.language:
            try:  # refused here, not acknowledged and then ignored
                self.registry.check_language(language)
            except RegistryError:
                raise AdapterError(f"update to a language this server does not transcribe: {language[:20]}") from None
        await self.send("updated")
        if self.params is not None and language != self.params.language:
            self._enqueue(lambda: self._change_language(language))

    async def _on_paused(self, msg: wire.ClientMessage) -> None:
        if self.state == "paused":
            return
        self.state = "paused"
        if self.call is not None:
            await self.call.event("paused", {"position_ms": msg.position_ms})
        self._enqueue(self._pause)

    async def _on_resumed(self, msg: wire.ClientMessage) -> None:
        start, dropped = wire.gap_parameters(msg.parameters, "resumed")
        self._gap(start, dropped)
        if self.state != "paused":
            return
        self.state = "active"
        if self.call is not None:
            await self.call.event("resumed", {"start_ms": start, "discarded_ms": dropped})
        self._enqueue(self._resume)

    async def _on_discarded(self, msg: wire.ClientMessage) -> None:
        start, dropped = wire.gap_parameters(msg.parameters, "discarded")
        self._gap(start, dropped)
        if self.call is not None:
            await self.call.event("discarded", {"start_ms": start, "discarded_ms": dropped})

    async def _on_error(self, msg: wire.ClientMessage) -> None:
        code, message = msg.parameters.get("code"), msg.parameters.get("message")
        log.warning("audiohook session %s: client error %s: %s", self.label, str(code)[:8], str(message)[:200])

    async def _on_close(self, msg: wire.ClientMessage) -> None:
        reason = msg.parameters.get("reason")
        self.state = "closing"
        log.info("audiohook session %s: close (%s)", self.label, str(reason)[:20])
        self._enqueue(self._close)

    # -- open --------------------------------------------------------------------------------------------

    async def _open(self, params: wire.Open) -> None:
        self.open = params
        header_org = self.headers.get("audiohook-organization-id")
        if header_org is not None and params.organization_id != header_org:
            raise unauthorized("organizationId differs from the Audiohook-Organization-Id header")
        chosen = wire.select_media(params.media)
        if chosen is None:
            raise AdapterError("no offered media is supported (PCMU 8 kHz or L16 8/16 kHz, external/internal)")
        opened: dict[str, Any] = {"media": [chosen.raw]}
        if params.supported_languages:
            opened["supportedLanguages"] = wire.language_tags(self._languages())
        if params.language and not params.probe:
            self.params = self._stream_params(params)
        if not params.probe:
            metadata = {"organizationId": params.organization_id, "conversationId": params.conversation_id,
                        "sessionId": self.session_id, "correlationId": self.headers.get("audiohook-correlation-id"),
                        "participant": {k: v for k, v in params.participant.items() if isinstance(v, str)},
                        "media": chosen.raw, "language": params.language}
            name = params.participant.get("aniName")
            tracks = [TrackSpec(ch, Participant(PARTICIPANTS[ch].id, PARTICIPANTS[ch].role,
                                                name if ch == "external" and isinstance(name, str) else ""))
                      for ch in chosen.channels]
            try:
                self.call = await self.registry.media_connected(
                    tenant=self.tenant, namespace=NAMESPACE, guid=params.conversation_id, tracks=tracks,
                    source=self.source, metadata=metadata)
            except MediaRefused as exc:
                raise AdapterError(f"refused: {exc.reason}", Close.TRY_LATER if exc.capacity else Close.POLICY) \
                    from None
        self.media = chosen
        self.state = "active"
        self.started = True
        await self.send("opened", opened)
        log.info("audiohook session %s opened, tenant %s, media %s %s/%s%s", self.label, self.tenant, chosen.format,
                 chosen.rate, ",".join(chosen.channels), " (probe)" if params.probe else "")
        if self.params is not None:
            self._enqueue(self._start)

    @property
    def tenant(self) -> str:
        return self.key.tenant if self.key is not None else "default"

    def _languages(self) -> list[str]:
        langs = getattr(self.services.engine, "languages", None) if self.services.ready.is_set() else None
        return sorted(str(x) for x in langs or ())

    def _stream_params(self, params: wire.Open) -> StreamParams:
        assert params.language is not None
        try:
            self.registry.check_language(params.language)
        except UnsupportedLanguage:
            raise AdapterError(f"language {params.language[:20]} is not supported") from None
        except RegistryError:
            raise AdapterError("the speech model is not loaded yet", Close.TRY_LATER) from None
        redaction = params.custom_config.get("redactionOutput", "redacted")
        if redaction not in REDACTION_OUTPUTS or redaction == "redacted_and_unredacted":
            raise AdapterError("'customConfig.redactionOutput' must be redacted or unredacted")
        partials = params.custom_config.get("partials", True)
        if not isinstance(partials, bool):
            raise AdapterError("'customConfig.partials' must be a boolean")
        return StreamParams(language=params.language, redaction_output=redaction, partials=partials,
                            detailed_token=redaction == "unredacted", surface=SURFACE,
                            options={"audiohook_session": self.session_id})

    # -- audio --------------------------------------------------------------------------------------------

    def _gap(self, start_ms: int, dropped_ms: int) -> None:
        """Audio from `start_ms` for `dropped_ms` was never sent: the next frame goes after it."""
        if self.media is None or dropped_ms <= 0:
            return
        if start_ms + dropped_ms - self.samples * 1000 // self.media.rate > MAX_GAP_MS:
            raise AdapterError("discarded audio longer than a call")
        at = (start_ms + dropped_ms) * self.media.rate // 1000
        if at > max(self.samples, self.place_at or 0):
            self.place_at = at

    async def on_bytes(self, data: bytes) -> bool:
        if self.state == "paused":
            raise AdapterError("audio while paused")
        if self.state != "active" or self.media is None:
            raise AdapterError("audio before 'opened'" if self.state == "new" else f"audio in state {self.state}")
        media = self.media
        data = self._rest + data if self._rest else data
        usable = len(data) - len(data) % media.frame_bytes
        self._rest = data[usable:]
        if not usable:
            return False
        n = usable // media.frame_bytes
        timestamp_ms = None
        if self.place_at is not None:
            self.samples, self.place_at = self.place_at, None
            timestamp_ms = self.samples * 1000 // media.rate
        self.samples += n
        if self.call is None:
            return False  # a probe's audio goes nowhere
        channels = len(media.channels)
        if media.format == "PCMU":
            frames = np.frombuffer(data, dtype=np.uint8, count=usable).reshape(n, channels)
            pcm = [ulaw_decode(frames[:, i]) for i in range(channels)]
        else:  # L16 in the byte order of the reference client (little-endian)
            samples = l16_decode(memoryview(data)[:usable], channels=channels)
            pcm = [samples[:, i].copy() for i in range(channels)] if channels > 1 else [samples]
        if self._pending:
            # A start or stop is under way: this audio waits behind it, so it lands in the interval
            # the client meant (a resume's audio in the new interval), in order.
            self._queued_samples += n
            if self._queued_samples > MAX_QUEUED_S * media.rate:
                await self._jobs.join()  # back-pressure on a client that outruns a slow stop
            self._enqueue(lambda: self._feed(pcm, timestamp_ms, n))
        else:
            await self._feed(pcm, timestamp_ms, 0)
        return False

    async def _feed(self, pcm: list[np.ndarray], timestamp_ms: int | None, queued: int) -> None:
        assert self.media is not None and self.call is not None
        self._queued_samples -= queued
        for name, channel in zip(self.media.channels, pcm):
            await self.call.audio(name, channel, self.media.rate, timestamp_ms)

    # -- transcription (worker) ------------------------------------------------------------------------------

    def _enqueue(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"audiohook-{self.session_id}")
        self._pending += 1
        self._jobs.put_nowait(job)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                log.exception("audiohook session %s: a transcription step failed", self.label)
            finally:
                self._pending -= 1
                self._jobs.task_done()

    def _key(self) -> tuple[str, str, str]:
        assert self.open is not None
        return self.tenant, NAMESPACE, self.open.conversation_id

    async def _start(self) -> None:
        if self.params is None or self.media is None or self.state in ("disconnecting", "closed"):
            return
        try:
            legs = await self._start_streaming(self.params)
        except AlreadyStarted:
            log.info("audiohook session %s: transcription already started by another request", self.label)
            return
        except (CallNotFound, MediaEnding):
            return
        except (RegistryError, NoCapacity) as exc:
            log.warning("audiohook session %s: transcription not started: %s", self.label, type(exc).__name__)
            await self._disconnect("error", "transcription is not available now")
            return
        self.legs = legs
        for pid, leg in legs.items():
            channel = leg.track.name if leg.track is not None else ""
            if channel not in self.media.channels:
                continue
            bc = self.backchannels.get(pid)
            if bc is None:
                bc = self.backchannels[pid] = Backchannel(self.services.bus, self._sender(self.media.channels.index(channel)),
                                                          finals_only=not self.params.partials)
            bc.stream_id = leg.stream_id

    async def _start_streaming(self, params: StreamParams) -> dict[str, Leg]:
        """Start, retrying a refusal for capacity for a while: the scheduler refuses while it drains
        the finals of a stop (a pause just before a resume), and the audio waits behind this."""
        deadline = time.monotonic() + START_RETRY_S
        while True:
            try:
                return await self.registry.start_streaming(*self._key(), params)
            except NoCapacity:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    def _sender(self, channel_id: int) -> Callable[[UtteranceEvent], Awaitable[None]]:
        async def send(ev: UtteranceEvent) -> None:
            if self.state in ("closed", "disconnecting") or (ev.kind == "partial" and self.state == "closing"):
                return
            language = self.params.language if self.params is not None else None
            await self.send("event", {"entities": [wire.transcript_entity(ev, channel_id, language)]})
        return send

    def _transcribing(self) -> bool:
        return any(not leg.closed for leg in self.legs.values())

    async def _stop(self, participants: list[str] | None) -> None:
        if self.open is None or self.open.probe:
            return
        try:
            await self.registry.stop_streaming(*self._key(), participants=participants)
        except (CallNotFound, AlreadyStopped):
            pass
        for bc in self.backchannels.values():
            await bc.drain()

    async def _pause(self) -> None:
        self.resume_own = self.params is not None and self._transcribing()
        await self._stop(None)  # hold or secure pause: nobody's transcription goes on

    async def _resume(self) -> None:
        if self.resume_own:  # even if a close already arrived: the audio queued behind this is the call's
            self.resume_own = False
            await self._start()

    async def _change_language(self, language: str) -> None:
        if self.params is None:
            return
        self.params = replace(self.params, language=language)  # checked when the update arrived
        if self._transcribing():
            await self._stop(list(self.legs))
            await self._start()

    async def _close(self) -> None:
        """Flush: the connector's last finals go out, the media ends, then `closed`."""
        if self._transcribing():
            await self._stop(list(self.legs))
        if self.call is not None:
            await self.call.end("closed by Genesys")
        await self.send("closed")
        self.state = "closed"
        self.idle_timeout_s = CLOSE_WAIT_S  # the client closes the socket now

    # -- errors and the end ------------------------------------------------------------------------------------

    async def _disconnect(self, reason: str, info: str) -> None:
        if self.state not in ("closing", "closed", "disconnecting"):
            self.state = "disconnecting"
            await self.send("disconnect", {"reason": reason, "info": info[:200]})

    def timeout_error(self, started: bool, seconds: float) -> AdapterError:
        if self.state == "closed":
            return AdapterError("the client did not close the socket after 'closed'", Close.NORMAL)
        return AdapterError(f"no {'message' if started else 'open'} for {seconds:.0f} s")

    async def on_refused(self, error: AdapterError) -> None:
        """`disconnect` in the protocol's words, then answer the client's close transaction."""
        if self.state in ("closed", "closing"):
            return
        if error.status == 401:  # the reason stays in our log: it would tell a prober what to fix
            await self._disconnect("unauthorized", "authentication failed")
        else:
            await self._disconnect("error", error.reason)
        deadline = time.monotonic() + CLOSE_WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self.ws.receive(), left)
            except (asyncio.TimeoutError, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                msg = wire.parse_message(message.get("text") or "")
            except AdapterError:
                continue  # audio in flight, or more of what went wrong: only a close matters now
            self.clientseq = max(self.clientseq, msg.seq)
            if msg.type == "close":
                await self.send("closed")
                self.state = "closed"
                return

    async def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if self._worker is not None:
            # Let a start or stop under way finish (cancelling one mid-stop would leave its legs
            # half closed), with the audio queued behind it; then the media ends.
            try:
                await asyncio.wait_for(self._jobs.join(), END_WAIT_S)
            except asyncio.TimeoutError:
                log.error("audiohook session %s: transcription steps still running at the end", self.label)
            self._worker.cancel()
        try:
            if self.call is not None:
                await self.call.end(reason)
        except Exception:  # the socket is going away whatever the registry thinks
            log.exception("audiohook session %s: ending the call failed", self.label)
        finally:
            for bc in self.backchannels.values():
                bc.close()


@router.websocket(PATH)
async def audiohook(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    if services.registry is None:
        await deny(ws, 503, "not ready")
        return
    began = time.monotonic()
    source = peer_of(ws)
    headers = {name: value.strip() for name in REQUIRED_HEADERS if (value := ws.headers.get(name)) is not None}
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    target = (ws.scope.get("raw_path") or ws.scope["path"].encode()).decode("latin-1")
    query = ws.scope.get("query_string", b"").decode("latin-1")
    result = audiohook_auth.verify(services.settings.parsed_audiohook_keys, ws.headers,
                                   request_target=target + (f"?{query}" if query else ""),
                                   authority=ws.headers.get("host", ""))
    if missing and result.key is not None:
        result = audiohook_auth.AuthResult(None, f"missing header {missing[0]}")
    slot = await admit(ws, services.connections)  # unauthenticated sockets count too: they are capped
    if slot is None:
        return
    await ws.accept()
    session = AudioHookSession(ws, services, result.key, headers, source)
    session.max_duration_s = services.settings.max_call_s
    if result.key is None:
        try:
            # As the reference server does: upgrade, then `disconnect` with reason unauthorized.
            log.warning("audiohook session from %s refused: %s", source, result.reason)
            await asyncio.sleep(max(0.0, MIN_FAILURE_S - (time.monotonic() - began)))
            await session.on_refused(unauthorized(result.reason))
            await close(ws, Close.POLICY, "unauthorized")
        finally:
            slot.release()
        return
    await run_session(ws, session, slot)
