"""WS /mg-autotranscribe/v1/twilio-media: the socket side of Twilio Media Streams ingest.

Authentication happens before the upgrade (Twilio logs error 31920 for any non-101 answer, which is
what a refused stream should look like): the stream-URL token, and X-Twilio-Signature when an auth
token is configured. After the upgrade every frame goes to `TwilioStream`; a protocol error closes
this one socket with a close code and reason and a log line, never a traceback, and never touches
another call. Nothing is ever sent back: a fork (<Start><Stream>) must not receive messages, and a
<Connect><Stream> only needs the socket to stay open.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket

from callscribe.api.errors import asapp_error_response
from callscribe.ingest import twilio_auth
from callscribe.ingest.twilio import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    MAX_MESSAGE_BYTES,
    StreamError,
    TwilioStream,
)

log = logging.getLogger("callscribe.ingest.twilio")

router = APIRouter()

#: Twilio sends `connected` and `start` at once; a socket that does not is not Twilio.
START_TIMEOUT_S = 15.0
#: A live stream carries a frame every 20 ms per track, silence included.
IDLE_TIMEOUT_S = 60.0


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with an HTTP answer (403/503), in the ASAPP error shape."""
    try:
        await websocket.send_denial_response(asapp_error_response(status, f"{status}-01", message))
    except RuntimeError:  # the server lacks the denial-response extension: close means 403
        await websocket.close(code=CLOSE_POLICY)


def _source(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "unknown"


def _close_reason(reason: str) -> str:
    # A close frame's reason must fit in 123 bytes of UTF-8.
    return reason.encode()[:123].decode(errors="ignore")


@router.websocket(twilio_auth.STREAM_PATH)
async def twilio_media(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    settings = services.settings
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    source = _source(websocket)

    if not twilio_auth.signature_ok(settings, query, websocket.headers.get("x-twilio-signature"),
                                    websocket.headers.get("x-twilio-webhooks-signature-settings")):
        log.warning("twilio stream from %s refused: bad or missing X-Twilio-Signature", source)
        await _deny(websocket, 403, "X-Twilio-Signature missing or invalid")
        return
    token = twilio_auth.token_from_query(query)
    tenant: str | None = None
    if token is not None:
        tenant = twilio_auth.tenant_of_token(settings, token)
        if tenant is None:
            log.warning("twilio stream from %s refused: stream token invalid or expired", source)
            await _deny(websocket, 403, "stream token invalid or expired")
            return
    if services.registry is None:
        await _deny(websocket, 503, "not ready")
        return

    async def tenant_from_parameters(params: dict[str, str]) -> str | None:
        return twilio_auth.tenant_of_token(settings, params.get("token"))

    await websocket.accept()
    stream = TwilioStream(services.registry, tenant=tenant, source=source, resolve_tenant=tenant_from_parameters)
    code, reason = await _run(websocket, stream)
    if code is not None:
        try:
            await websocket.close(code=code, reason=_close_reason(reason))
        except Exception:  # the peer is already gone; nothing left to tell it
            pass


async def _run(websocket: WebSocket, stream: TwilioStream) -> tuple[int | None, str]:
    """Feed frames to the stream until it stops, fails or the peer goes away.

    Returns the close code and reason to send, or (None, ...) when the peer already closed.
    """
    try:
        while True:
            timeout = IDLE_TIMEOUT_S if stream.started else START_TIMEOUT_S
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout)
            except TimeoutError:
                raise StreamError(f"no {'frame' if stream.started else 'start'} for {timeout:.0f} s", CLOSE_POLICY) from None
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1005)
                why = "closed without stop" if code in (1000, 1001, 1005) else f"connection lost (close code {code})"
                if code == CLOSE_TOO_BIG:
                    why = "message too large for the server"
                if stream.started:
                    log.info("twilio stream %s %s", stream.label, why)
                await stream.end(why)
                return None, why
            text = message.get("text")
            if text is None:
                raise StreamError("binary frame; Twilio sends JSON text frames only", CLOSE_UNSUPPORTED)
            if len(text) > MAX_MESSAGE_BYTES:
                raise StreamError(f"message larger than {MAX_MESSAGE_BYTES} bytes", CLOSE_TOO_BIG)
            if await stream.receive(text):
                return CLOSE_NORMAL, "stream stopped"
    except StreamError as exc:
        log.warning("twilio stream %s closed: %s", stream.label, exc.reason)
        await stream.end(f"protocol error: {exc.reason}")
        return exc.code, exc.reason
    except asyncio.CancelledError:  # server shutting down
        await stream.end("server shutdown")
        raise
    except Exception:
        log.exception("twilio stream %s failed", stream.label)
        await stream.end("internal error")
        return CLOSE_INTERNAL, "internal error"
