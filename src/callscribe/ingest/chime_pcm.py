"""One meeting attendee's audio as plain PCM16 over a WebSocket, for scripts and tests (the browser
path is WebRTC): `WS /chime/v1/attendee-audio?token=<JoinToken>&sample_rate=16000`.

The JoinToken of CreateAttendee authorises the socket: it resolves (Services.media_grants) to the
attendee's participant in the meeting's call. Binary frames are little-endian 16-bit mono PCM at
`sample_rate` (8000 to 48000, default 16000); a text frame `{"type": "stop"}` ends the audio and
the server closes normally. Refusals before the upgrade are HTTP answers in the Chime error shape:
403 ForbiddenException for a missing, unknown or revoked token, 400 for a bad sample_rate, 409
ConflictException when the attendee's audio is already connected, 503 without capacity. Deleting
the attendee or the meeting ends the media and closes the socket (1000, with the reason).
"""

from __future__ import annotations

import logging

import numpy as np
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from callscribe.api.chime_wire import PCM_PATH, error_shape
from callscribe.calls.media import MediaCall, MediaGrant, MediaRefused, TrackSpec
from callscribe.ingest.base import (AdapterError, Close, WebSocketAdapter, admit, close, deny, json_object,
                                    run_session)
from callscribe.ingest.limits import Slot
from callscribe.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["Chime SDK meetings"])
RATES = range(8000, 48001)
SOURCE = "chime-pcm"


class AttendeePcm(WebSocketAdapter):
    name = "chime-pcm"
    log = log
    idle_timeout_s = 60.0

    def __init__(self, grant: MediaGrant, rate: int) -> None:
        self.grant = grant
        self.rate = rate
        self.media: MediaCall | None = None
        self._odd = b""  # a byte left over when a frame split a sample
        self.ended: str | None = None  # why the media ended, once it has

    @property
    def label(self) -> str:
        return f"{self.grant.guid}/{self.grant.participant.id}"

    async def begin(self, registry: object) -> None:
        self.media = await registry.media_connected(  # type: ignore[attr-defined]
            tenant=self.grant.tenant, namespace=self.grant.namespace, guid=self.grant.guid,
            tracks=[TrackSpec(self.grant.participant.id, self.grant.participant)], source=SOURCE,
            metadata={"transport": "pcm-websocket", "sample_rate": self.rate})
        self.started = True

    async def on_bytes(self, data: bytes) -> bool:
        data = self._odd + data
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        if cut and self.media is not None:
            await self.media.audio(self.grant.participant.id, np.frombuffer(data[:cut], dtype="<i2"), self.rate)
        return False

    async def on_text(self, text: str) -> bool:
        msg = json_object(text)
        if msg.get("type") == "stop":
            return True
        raise AdapterError("the only text message is {\"type\": \"stop\"}", Close.UNSUPPORTED)

    async def end(self, reason: str) -> None:
        self.ended = self.ended or reason
        if self.media is not None:
            await self.media.end(reason)


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_shape(status, None, message), status_code=status)


@router.websocket(PCM_PATH)
async def attendee_audio(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    token = ws.query_params.get("token") or ""
    grant = await services.media_grants.resolve(token)
    if grant is None:
        await deny(ws, 403, "", response=_refuse(403, "The join token is not valid"))
        return
    rate_text = ws.query_params.get("sample_rate", "16000")
    if not rate_text.isdigit() or int(rate_text) not in RATES:
        await deny(ws, 400, "", response=_refuse(400, "sample_rate must be an integer from 8000 to 48000"))
        return
    if services.registry is None:
        await deny(ws, 503, "", response=_refuse(503, "The server is starting"))
        return
    slot = await admit(ws, services.connections, lambda why: deny(ws, 503, "", response=_refuse(503, why)))
    if slot is None:
        return
    try:
        await _serve(ws, services, token, grant, int(rate_text), slot)
    finally:
        # run_session gives the slot back too, but only once it runs: begin() may fail, and accept()
        # raises when the client left while the media was connecting (release is idempotent).
        slot.release()


async def _serve(ws: WebSocket, services: Services, token: str, grant: MediaGrant, rate: int, slot: Slot) -> None:
    adapter = AttendeePcm(grant, rate)
    adapter.max_duration_s = services.settings.max_call_s
    try:
        await adapter.begin(services.registry)
    except MediaRefused as refused:
        status = 503 if refused.capacity else 409
        await deny(ws, status, "", response=_refuse(status, refused.reason))
        return
    book = ws.app.state.chime_meetings

    async def kick(why: str) -> None:
        await adapter.end(why)
        await close(ws, Close.NORMAL, why)

    forget = book.watch(grant.tenant, grant.guid, kick, grant.participant.id)
    try:
        # The token was checked before the media connected: a deletion in between found no media to
        # end. Checked again now that the media is connected and watched (a later deletion ends it).
        if adapter.ended is None and await services.media_grants.resolve(token) != grant:
            await adapter.end("the join token was revoked")
        if adapter.ended is not None:  # revoked, or deleted (kicked) before the socket was open
            await deny(ws, 403, "", response=_refuse(403, "The join token is not valid"))
            return
        await ws.accept()
        if adapter.ended is not None:  # kicked while accepting: its close found no open socket
            await close(ws, Close.NORMAL, adapter.ended)
            return
        await run_session(ws, adapter, slot)
    finally:
        forget()
        await adapter.end("closed")
