"""ASAPP direct WebSocket ingest: WS /autotranscribe/v1/stream.

One connection is one leg (one speaker). Connections whose URL carried the same `externalId` are the
legs of one call (namespace "autotranscribe", guid = externalId, participant = the sender's role), so
they share redaction context; without an externalId each connection is a call of its own.

Protocol (specs/control-apis.md §A.4, messages in asapp_ws_messages.py): startStream -> startResponse;
binary L16 8 kHz mono audio -> transcript messages (finals only); finishStream -> the last finals ->
finalResponse with the summary, then close. Choices where ASAPP is silent:
- a bad token: the socket is accepted and closed at once with WebSocket code 1008 and reason
  "invalid or expired access token" (a client sees that code and reason; a refusal before accept
  shows only a bare HTTP 403);
- every refusal after accept is a finalResponse with the code (4040 bad message, 4050 language,
  4051 encoding, 4053 sample rate, 4056 order, 4083 idle or no startStream in time, 4090 duration,
  5002 no capacity), then close;
- detailedToken needs redactionOutput "unredacted" (tokens are never redacted), otherwise 4040;
- updateVocabulary is validated and answered 4084: the engine has no phrase biasing;
- smartFormatting is accepted; the engine always punctuates and capitalises.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket

from callscribe import urls
from callscribe.calls.events import UtteranceEvent
from callscribe.calls.leg import Leg
from callscribe.calls.media import MediaCall, MediaRefused, Participant, TrackSpec
from callscribe.calls.registry import CallRegistry, NoCapacity, NotReady, ShuttingDown, UnsupportedLanguage
from callscribe.ingest import asapp_ws_messages as wire
from callscribe.ingest.asapp_ws_messages import refused
from callscribe.ingest.backchannel import Backchannel
from callscribe.ingest.base import (JsonSender, AdapterError, Close, WebSocketAdapter, admit, close, deny, json_object,
                                    run_session)
from callscribe.services import Services
from callscribe.tokens import token_signer

log = logging.getLogger(__name__)
router = APIRouter(tags=["ASAPP direct WebSocket"])

NAMESPACE = urls.ASAPP_STREAM_NAMESPACE  # "autotranscribe"
IDLE_TIMEOUT_S = 60.0  # module-level so tests can shorten it
MAX_STREAM_S = 3 * 3600.0


class DirectStream(WebSocketAdapter):
    """One connection: its state machine, its leg and the transcripts sent back."""

    name = "direct stream"
    log = log
    max_message_bytes = 16 << 20  # uvicorn's own frame limit; audio may come in large frames
    def __init__(self, ws: WebSocket, services: Services, claims: dict[str, Any], token: str = ""):
        assert services.registry is not None  # the route refuses before the registry exists
        self.ws = ws
        self.token = token
        self.token_uses = services.token_uses
        self.drainers = services.drainers
        self.registry: CallRegistry = services.registry
        self.bus = services.bus
        self.tenant: str = claims["tenant"]
        self.guid: str = claims.get("external_id") or f"ws-{uuid.uuid4()}"
        self.state = "new"  # new -> streaming -> done
        self.role: str | None = None
        self.media: MediaCall | None = None
        self.leg: Leg | None = None
        self.backchannel: Backchannel | None = None
        self._odd = b""
        self.send = JsonSender(ws, "direct stream")
        self.start_timeout_s = self.idle_timeout_s = IDLE_TIMEOUT_S
        self.max_duration_s = min(MAX_STREAM_S, services.settings.max_call_s)

    @property
    def label(self) -> str:
        return f"{self.guid} ({self.role or 'not started'})"

    def timeout_error(self, started: bool, seconds: float) -> AdapterError:
        return refused(4083, "connection idle timeout" if started else "no startStream in time")

    def too_long_error(self, seconds: float) -> AdapterError:
        return refused(4090, "streaming duration over limit")


    async def on_bytes(self, data: bytes) -> bool:
        if self.state != "streaming" or self.media is None or self.role is None:
            raise refused(4056, "audio before startStream")
        data = self._odd + data
        usable = len(data) - (len(data) % 2)  # an odd byte waits for the next frame
        self._odd = data[usable:]
        if usable:
            pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
            await self.media.audio(self.role, pcm, wire.SAMPLE_RATE)
        return False

    async def on_text(self, text: str) -> bool:
        try:
            msg = json_object(text)
        except AdapterError as exc:
            raise refused(4040, exc.reason) from None
        kind = msg.get("message")
        if not isinstance(kind, str):
            raise refused(4040, "message must be a JSON object with a message field")
        if kind == "startStream":
            if self.state != "new":
                raise refused(4056, "startStream sent twice")
            await self.start(msg)
        elif kind == "finishStream":
            if self.state != "streaming":
                raise refused(4056, "finishStream before startStream")
            await self.finish(1000, "OK")
            return True
        elif kind == "updateVocabulary":
            await self.send({"message": "vocabularyResponse", "status": wire.vocabulary_status(msg)})
        else:
            raise refused(4040, f"unknown message {kind[:40]!r}")
        return False

    async def start(self, msg: dict[str, Any]) -> None:
        role, external_id, params = wire.parse_start(msg)
        if self.registry.draining:
            raise refused(5001, "service shutting down")
        if not await self.token_uses.bind_async(self.token, (self.guid, role), urls.URL_TTL_S + IDLE_TIMEOUT_S):
            raise refused(1008, "invalid or expired access token: it was used for another speaker")
        try:
            self.registry.check_language(params.language)
        except UnsupportedLanguage:
            raise refused(4050, "language not supported") from None
        except NotReady:
            raise refused(5002, "no instances available") from None
        try:
            self.media = await self.registry.media_connected(
                tenant=self.tenant, namespace=NAMESPACE, guid=self.guid,
                tracks=[TrackSpec(role, Participant(role, role, external_id=external_id))], source="asapp-ws",
                metadata={"externalId": external_id})
        except MediaRefused as exc:
            raise refused(5002 if exc.capacity else 4056, exc.reason) from None
        self.role = role
        self.backchannel = Backchannel(self.bus, self._send_transcript)
        try:
            legs = await self.registry.start_streaming(self.tenant, NAMESPACE, self.guid, params, participants=[role])
        except (NoCapacity, NotReady):
            raise refused(5002, "no instances available") from None
        except ShuttingDown:
            raise refused(5001, "service shutting down") from None
        except Exception:
            log.exception("direct stream start failed")
            raise refused(5000, "internal service error") from None
        self.leg = legs[role]
        self.backchannel.stream_id = self.leg.stream_id
        self.state = "streaming"
        self.started = True
        self.drainers.add(self.drain)
        await self.send(wire.start_response(self.leg.stream_id))

    async def _send_transcript(self, ev: UtteranceEvent) -> None:
        await self.send(wire.transcript(ev))

    async def _close_leg(self) -> None:
        """Close this connection's leg once: its last finals are published and sent back."""
        if self.leg is not None and not self.leg.closed and self.role is not None:
            try:
                await self.registry.stop_streaming(self.tenant, NAMESPACE, self.guid, participants=[self.role])
            except Exception:
                log.debug("closing direct stream leg", exc_info=True)
        if self.backchannel is not None:
            await self.backchannel.drain()

    async def finish(self, code: int, description: str) -> None:
        """Drain, send finalResponse (the session loop then closes the socket)."""
        self.state = "done"
        await self._close_leg()
        summary = self.leg.summary() if self.leg is not None else None
        await self.send(wire.final_response(self.leg.stream_id if self.leg else None, code, description, summary))

    async def on_refused(self, error: AdapterError) -> None:
        # The base's own refusals (a frame too large, say) are bad messages in ASAPP's words.
        await self.finish(error.status or (4040 if error.code != Close.INTERNAL else 5000), error.reason)

    async def drain(self) -> None:
        """The server is stopping: the last finals, then finalResponse 5001, then close."""
        if self.state == "streaming":
            await self.finish(5001, "service shutting down")
            await close(self.ws, Close.NORMAL, "service shutting down")

    async def end(self, reason: str) -> None:
        self.drainers.discard(self.drain)
        self.state = "done"
        try:
            await self._close_leg()
            if self.media is not None:
                await self.media.end(reason)
        finally:
            if self.backchannel is not None:
                self.backchannel.close()


@router.websocket(urls.ASAPP_STREAM_PATH)
async def stream(ws: WebSocket) -> None:
    services = ws.app.state.services
    token = ws.query_params.get("token") or ""
    claims = token_signer(services.settings).verify(token, urls.ASAPP_TOKEN_PURPOSE)
    if services.registry is None:
        await deny(ws, 503, "not ready")
        return
    slot = await admit(ws, services.connections)
    if slot is None:
        return
    await ws.accept()
    if claims is None:
        slot.release()
        await close(ws, Close.POLICY, "invalid or expired access token")
        return
    await run_session(ws, DirectStream(ws, services, claims, token), slot)
