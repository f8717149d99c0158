"""WS /mg-autotranscribe/v1/twilio-media: the socket side of Twilio Media Streams ingest.

Authentication happens before the upgrade (Twilio logs error 31920 for any non-101 answer, which is
what a refused stream should look like): the stream-URL token, and X-Twilio-Signature when an auth
token is configured. After the upgrade the shared session loop (ingest/base.py) feeds every frame to
`TwilioStream`. Nothing is ever sent back: a fork (<Start><Stream>) must not receive messages, and a
<Connect><Stream> only needs the socket to stay open.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket

from callscribe import urls
from callscribe.ingest import twilio_auth
from callscribe.ingest.base import admit, deny, peer_of, run_session
from callscribe.ingest.twilio import TwilioStream

log = logging.getLogger("callscribe.ingest.twilio")

router = APIRouter()

#: Twilio sends `connected` and `start` at once; a socket that does not is not Twilio.
START_TIMEOUT_S = 15.0
#: A live stream carries a frame every 20 ms per track, silence included.
IDLE_TIMEOUT_S = 60.0


@router.websocket(urls.TWILIO_MEDIA_PATH)
async def twilio_media(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    settings = services.settings
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    source = peer_of(websocket)

    if not twilio_auth.signature_ok(settings, query, websocket.headers.get("x-twilio-signature"),
                                    websocket.headers.get("x-twilio-webhooks-signature-settings")):
        log.warning("twilio stream from %s refused: bad or missing X-Twilio-Signature", source)
        await deny(websocket, 403, "X-Twilio-Signature missing or invalid")
        return
    token = twilio_auth.token_from_query(query)
    tenant: str | None = None
    if token is not None:
        tenant = twilio_auth.tenant_of_token(settings, token)
        if tenant is None:
            log.warning("twilio stream from %s refused: stream token invalid or expired", source)
            await deny(websocket, 403, "stream token invalid or expired")
            return
    if services.registry is None:
        await deny(websocket, 503, "not ready")
        return
    slot = await admit(websocket, services.connections)
    if slot is None:
        return
    used: list[str] = [token] if token else []

    async def tenant_from_parameters(params: dict[str, str]) -> str | None:
        tenant = twilio_auth.tenant_of_token(settings, params.get("token"))
        if tenant is not None:
            used.append(params["token"])
        return tenant

    async def bind(guid: str) -> bool:
        """A stream token serves the call of its first use only (a leaked URL claims nothing else)."""
        return not used or await services.token_uses.bind_async(used[0], guid, twilio_auth.TOKEN_TTL_S + IDLE_TIMEOUT_S)

    await websocket.accept()
    stream = TwilioStream(services.registry, tenant=tenant, source=source, resolve_tenant=tenant_from_parameters,
                          bind=bind)
    stream.start_timeout_s, stream.idle_timeout_s = START_TIMEOUT_S, IDLE_TIMEOUT_S
    stream.max_duration_s = settings.max_call_s
    await run_session(websocket, stream, slot)
