"""ASAPP direct WebSocket: POST /autotranscribe/v1/streaming-url and WS /autotranscribe/v1/stream.

One connection is one leg (one speaker). Connections whose URL carried the same `externalId` are the
legs of one call (namespace "autotranscribe", guid = externalId), so they share redaction context;
without an externalId each connection is a call of its own.

Protocol (specs/control-apis.md §A.4): startStream -> startResponse; binary L16 8 kHz mono audio ->
transcript messages (finals only); finishStream -> the last finals -> finalResponse with the summary,
then close. Status codes are strings here, as in ASAPP's startResponse. Choices where ASAPP is silent:
- a bad token: the socket is accepted and closed at once with WebSocket code 1008 and reason
  "invalid or expired access token" (a client sees that code and reason; a refusal before accept
  shows only a bare HTTP 403);
- every refusal after accept is a finalResponse with the code (4040 bad message, 4050 language,
  4051 encoding, 4053 sample rate, 4056 order, 4083 idle, 4090 duration, 5002 no capacity), then close;
- detailedToken tokens go in the utterance entry: {"text", "tokens": [{"content", "start", "end",
  "punctuationBefore"?, "punctuationAfter"?}]}; detailedToken needs redactionOutput "unredacted"
  (tokens are never redacted), otherwise 4040;
- redacted_and_unredacted adds "unredactedText" beside "text";
- updateVocabulary is validated and acknowledged (vocabularyResponse 1000, or 4091 for a bad format)
  but the speech engine has no phrase biasing, so the phrases do not change recognition;
- smartFormatting is accepted; the engine always punctuates and capitalises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Request, WebSocket
from starlette.websockets import WebSocketState

from callscribe.api.errors import AsappError
from callscribe.api.limits import authorize, read_json
from callscribe.calls.events import UtteranceEvent
from callscribe.calls.leg import StreamParams, summary_dict
from callscribe.calls.media import MediaRefused
from callscribe.calls.redaction import REDACTION_OUTPUTS
from callscribe.calls.registry import NoCapacity, NotReady, UnsupportedLanguage
from callscribe.tokens import token_signer

log = logging.getLogger(__name__)
router = APIRouter(tags=["ASAPP direct WebSocket"])

NAMESPACE = "autotranscribe"
TOKEN_PURPOSE = "asapp-direct-stream"
URL_TTL_S = 300
STREAM_PATH = "/autotranscribe/v1/stream"
IDLE_TIMEOUT_S = 60.0  # module-level so tests can shorten it
MAX_STREAM_S = 3 * 3600.0
SAMPLE_RATE = 8000
_PUNCT = ".,?!;:\"'"


@router.post("/autotranscribe/v1/streaming-url")
async def streaming_url(request: Request) -> dict:
    """A WebSocket URL with a token valid for 5 minutes, bound to the caller's tenant."""
    key = authorize(request)
    settings = request.app.state.services.settings
    body = await read_json(request, settings.max_body_bytes, optional=True)
    external_id = None
    if body is not None:
        if not isinstance(body, dict):
            raise AsappError(400, "400-01", "Request body must be a JSON object")
        external_id = body.get("externalId")
        if external_id is not None and (not isinstance(external_id, str) or not 0 < len(external_id) <= 256):
            raise AsappError(400, "400-01", "externalId must be a string of 1 to 256 characters")
    token = token_signer(settings).issue(key.tenant, TOKEN_PURPOSE, URL_TTL_S, external_id=external_id)
    return {"streamingUrl": f"{settings.public_ws_url}{STREAM_PATH}?token={quote(token, safe='')}"}


class StreamRefused(Exception):
    def __init__(self, code: int, description: str):
        super().__init__(description)
        self.code = code
        self.description = description


def _status(code: int, description: str) -> dict[str, str]:
    return {"code": str(code), "description": description}


def _tokens(words: Any) -> list[dict[str, Any]]:
    out = []
    for w in words or ():
        text = w.text.strip()
        core = text.strip(_PUNCT)
        if not core:  # a token of punctuation only stays as it is
            core = text
        before = text[: len(text) - len(text.lstrip(_PUNCT))] if core != text else ""
        after = text[len(text.rstrip(_PUNCT)):] if core != text else ""
        token: dict[str, Any] = {"content": core, "start": w.start_ms, "end": w.end_ms}
        if before:
            token["punctuationBefore"] = before
        if after:
            token["punctuationAfter"] = after
        out.append(token)
    return out


def _parse_start(msg: dict) -> tuple[str, str, StreamParams]:
    sender = msg.get("sender")
    if not isinstance(sender, dict):
        raise StreamRefused(4040, "sender is required")
    role, external_id = sender.get("role"), sender.get("externalId")
    if role not in ("customer", "agent"):
        raise StreamRefused(4040, "sender.role must be customer or agent")
    if not isinstance(external_id, str) or not 0 < len(external_id) <= 256:
        raise StreamRefused(4040, "sender.externalId is required")
    language = msg.get("language", "en-US")
    if not isinstance(language, str):
        raise StreamRefused(4040, "language must be a string")
    rate = msg.get("samplingRate", SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise StreamRefused(4040, "samplingRate must be a number")
    if rate != SAMPLE_RATE:
        raise StreamRefused(4053, "sample rate not supported")
    encoding = msg.get("encoding", "L16")
    if encoding != "L16":
        raise StreamRefused(4051, "encoding not supported")
    flags = {}
    for name, default in (("smartFormatting", True), ("detailedToken", False), ("audioRecordingAllowed", False)):
        value = msg.get(name, default)
        if not isinstance(value, bool):
            raise StreamRefused(4040, f"{name} must be a boolean")
        flags[name] = value
    redaction = msg.get("redactionOutput", "redacted")
    if redaction not in REDACTION_OUTPUTS:
        raise StreamRefused(4040, "redactionOutput must be redacted, unredacted or redacted_and_unredacted")
    if flags["detailedToken"] and redaction != "unredacted":
        raise StreamRefused(4040, "detailedToken requires redactionOutput unredacted")
    params = StreamParams(language=language, detailed_token=flags["detailedToken"],
                          audio_recording_allowed=flags["audioRecordingAllowed"], redaction_output=redaction,
                          smart_formatting=flags["smartFormatting"], external_ids={role: external_id})
    return role, external_id, params


def _check_vocabulary(msg: dict) -> bool:
    phrases = msg.get("phrases")
    if not isinstance(phrases, list) or len(phrases) > 1000:
        return False
    for p in phrases:
        if not isinstance(p, dict) or not isinstance(p.get("phrase"), str) or not p["phrase"].strip():
            return False
        sounds = p.get("soundsLike", [])
        if not isinstance(sounds, list) or not all(isinstance(s, str) for s in sounds):
            return False
        if p.get("category") not in (None, "address", "name", "number", "company", "currency"):
            return False
    return True


class DirectStream:
    """One connection: its state machine, its leg and the transcripts sent back."""

    def __init__(self, ws: WebSocket, services: Any, claims: dict):
        self.ws = ws
        self.services = services
        self.registry = services.registry
        self.tenant: str = claims["tenant"]
        self.guid: str = claims.get("external_id") or f"ws-{uuid.uuid4()}"
        self.state = "new"  # new -> streaming -> done
        self.role: str | None = None
        self.media: Any = None
        self.leg: Any = None
        self.vocabulary: list[dict] = []
        self._odd = b""
        self._opened = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._queue: asyncio.Queue[UtteranceEvent] = asyncio.Queue()
        self._unsubscribe = None
        self._sender: asyncio.Task | None = None

    async def send(self, payload: dict) -> None:
        async with self._send_lock:
            if self.ws.client_state == WebSocketState.CONNECTED:
                try:
                    await self.ws.send_text(json.dumps(payload))
                except Exception:  # the peer went away; the receive loop will see the disconnect
                    log.debug("send on a closed direct stream", exc_info=True)

    async def run(self) -> None:
        try:
            while self.state != "done":
                try:
                    message = await asyncio.wait_for(self.ws.receive(), timeout=IDLE_TIMEOUT_S)
                except asyncio.TimeoutError:
                    await self.finish(4083, "connection idle timeout")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                if time.monotonic() - self._opened > MAX_STREAM_S:
                    await self.finish(4090, "streaming duration over limit")
                    break
                try:
                    if message.get("bytes") is not None:
                        self.on_audio(message["bytes"])
                    elif message.get("text") is not None:
                        await self.on_text(message["text"])
                except StreamRefused as refused:
                    await self.finish(refused.code, refused.description)
        finally:
            await self.cleanup()

    def on_audio(self, data: bytes) -> None:
        if self.state != "streaming":
            raise StreamRefused(4056, "audio before startStream")
        data = self._odd + data
        usable = len(data) - (len(data) % 2)  # an odd byte waits for the next frame
        self._odd = data[usable:]
        if usable:
            pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
            self.media.call.feed(self.media, self.role, pcm, SAMPLE_RATE, None)

    async def on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise StreamRefused(4040, "message is not JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("message"), str):
            raise StreamRefused(4040, "message must be a JSON object with a message field")
        kind = msg["message"]
        if kind == "startStream":
            if self.state != "new":
                raise StreamRefused(4056, "startStream sent twice")
            await self.start(msg)
        elif kind == "finishStream":
            if self.state != "streaming":
                raise StreamRefused(4056, "finishStream before startStream")
            await self.finish(1000, "OK")
        elif kind == "updateVocabulary":
            if _check_vocabulary(msg):
                self.vocabulary.extend(msg["phrases"])
                await self.send({"message": "vocabularyResponse", "status": _status(1000, "OK")})
            else:
                await self.send({"message": "vocabularyResponse", "status": _status(4091, "invalid vocabulary format")})
        else:
            raise StreamRefused(4040, f"unknown message {kind[:40]!r}")

    async def start(self, msg: dict) -> None:
        role, _, params = _parse_start(msg)
        if self.registry is None:
            raise StreamRefused(5002, "no instances available")
        try:
            self.registry.check_language(params.language)
        except UnsupportedLanguage:
            raise StreamRefused(4050, "language not supported") from None
        except NotReady:
            raise StreamRefused(5002, "no instances available") from None
        try:
            self.media = await self.registry.media_connected(
                tenant=self.tenant, namespace=NAMESPACE, guid=self.guid, tracks=[role], source="asapp-ws",
                metadata={"externalId": params.external_ids[role]})
        except MediaRefused as refused:
            raise StreamRefused(5002 if refused.capacity else 4056, refused.reason) from None
        self.role = role
        self._unsubscribe = self.services.bus.subscribe(self._on_event)
        self._sender = asyncio.create_task(self._send_transcripts())
        try:
            legs = await self.registry.start_streaming(self.tenant, NAMESPACE, self.guid, params, roles=[role])
        except (NoCapacity, NotReady):
            raise StreamRefused(5002, "no instances available") from None
        except Exception:
            log.exception("direct stream start failed")
            raise StreamRefused(5000, "internal service error") from None
        self.leg = legs[role]
        self.state = "streaming"
        await self.send({"message": "startResponse", "streamID": self.leg.stream_id, "status": _status(1000, "OK")})

    def _on_event(self, event: Any) -> None:
        leg = self.leg
        if (isinstance(event, UtteranceEvent) and event.kind == "final" and leg is not None
                and event.stream_id == leg.stream_id and event.call.guid == self.guid):
            self._queue.put_nowait(event)

    async def _send_transcripts(self) -> None:
        while True:
            ev = await self._queue.get()
            try:
                entry: dict[str, Any] = {"text": ev.text}
                if ev.unredacted_text is not None:
                    entry["unredactedText"] = ev.unredacted_text
                if ev.words is not None:
                    entry["tokens"] = _tokens(ev.words)
                await self.send({"message": "transcript", "start": ev.start_ms, "end": ev.end_ms, "utterance": [entry]})
            except Exception:
                log.debug("sending a transcript failed", exc_info=True)
            finally:
                self._queue.task_done()

    async def _close_leg(self) -> dict | None:
        """Close this connection's leg (its last finals are published); its summary, if it had one."""
        if self.leg is None or self.leg.closed:
            return summary_dict(self.leg.summary()) if self.leg is not None else None
        try:
            await self.registry.stop_streaming(self.tenant, NAMESPACE, self.guid, roles=[self.role])
        except Exception:
            log.debug("closing direct stream leg", exc_info=True)
        return summary_dict(self.leg.summary())

    async def finish(self, code: int, description: str) -> None:
        """Drain, send finalResponse, close."""
        self.state = "done"
        summary = await self._close_leg() or {"totalAudioBytes": 0, "audioDurationMs": 0,
                                              "streamingSeconds": 0, "transcripts": 0}
        if self._sender is not None:
            await self._queue.join()
        await self.send({"message": "finalResponse", "streamId": self.leg.stream_id if self.leg else None,
                         "status": _status(code, description), "summary": summary})
        if self.ws.client_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=1000)
            except Exception:
                log.debug("closing a direct stream", exc_info=True)

    async def cleanup(self) -> None:
        self.state = "done"
        try:
            await self._close_leg()
            if self.media is not None:
                await self.media.end("finished")
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
            if self._sender is not None:
                self._sender.cancel()


@router.websocket(STREAM_PATH)
async def stream(ws: WebSocket) -> None:
    services = ws.app.state.services
    claims = token_signer(services.settings).verify(ws.query_params.get("token"), TOKEN_PURPOSE)
    await ws.accept()
    if claims is None:
        await ws.close(code=1008, reason="invalid or expired access token")
        return
    try:
        await DirectStream(ws, services, claims).run()
    except Exception:  # one broken connection must not take anything else down
        log.exception("direct stream failed")
        if ws.client_state == WebSocketState.CONNECTED:
            await ws.close(code=1011)
