"""HTTP side of WebRTC ingest: the SDP offer/answer exchange and the page that joins from a browser.

- POST /v1/media/webrtc   `{"token", "sdp", "type": "offer"}` (or the token as `Authorization:
                          Bearer`) -> `{"type": "answer", "sdp"}`. The token is a join token some
                          surface registered a resolver for (`services.media_grants`); the answer
                          holds every candidate of ours, so the client sends its offer once its own
                          ICE gathering is complete (no trickle). Errors in callscribe's shape:
                          400 body or SDP unusable, 401 token missing or unknown (counted by the
                          failed-auth throttle), 409 the participant's media is already connected
                          through another transport, 503 no capacity or draining (Retry-After).
- GET /v1/media/join      the page (web/join.html + /ui/join.js): `?token=` joins at once with the
                          microphone; nothing is played back.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse

from callscribe import urls
from callscribe.api.errors import ApiError
from callscribe.api.limits import read_json
from callscribe.ingest.webrtc import MAX_SDP_BYTES, OfferRefused, PeerLimits, WebRtcPeers

MAX_BODY_BYTES = MAX_SDP_BYTES + 8 * 1024  # the offer, its token and the JSON around them
MAX_TOKEN_CHARS = 4096
RETRY_AFTER_S = 5
WEB_DIR = resources.files("callscribe") / "web"  # the dashboard's files; /ui/ serves join.js

# The page loads only its own files and talks only to this server; its URL carries a token, which
# no Referer may repeat.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
}


@asynccontextmanager
async def _peers(app: FastAPI) -> AsyncIterator[None]:
    """The app's WebRTC peers: closed at drain (SIGTERM) and, at the latest, when the app stops
    (before the registry closes, so their calls' last audio is transcribed)."""
    services = app.state.services
    settings = services.settings
    peers = WebRtcPeers(lambda: services.registry, max_peers=settings.webrtc_max_peers,
                        limits=PeerLimits(settings.webrtc_connect_timeout_s, settings.webrtc_idle_timeout_s,
                                          settings.max_call_s),
                        connections=services.connections)
    app.state.webrtc_peers = peers
    services.drainers.add(peers.drain)
    try:
        yield
    finally:
        services.drainers.discard(peers.drain)
        await peers.drain()


router = APIRouter(tags=["media"], lifespan=_peers)


def _token(request: Request, body: dict[str, Any]) -> str:
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    token = given.strip() if scheme.lower() == "bearer" and given.strip() else body.get("token")
    if token is None or token == "":
        raise ApiError(401, None, "A join token is required ('token', or Authorization: Bearer)",
                       headers={"WWW-Authenticate": "Bearer"})
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise ApiError(401, None, "Join token invalid or expired", headers={"WWW-Authenticate": "Bearer"})
    return token


@router.post(urls.WEBRTC_OFFER_PATH)
async def webrtc_offer(request: Request) -> dict[str, str]:
    services = request.app.state.services
    body = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise ApiError(400, None, "The body must be a JSON object: {\"token\", \"sdp\", \"type\": \"offer\"}")
    token = _token(request, body)
    grant = await services.media_grants.resolve(token)
    if grant is None:
        raise ApiError(401, None, "Join token invalid or expired", headers={"WWW-Authenticate": "Bearer"})
    if body.get("type") != "offer":
        raise ApiError(400, None, "'type' must be \"offer\"")
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ApiError(400, None, "'sdp' must be the offer's SDP as a string")
    client = request.client
    address = client.host if client else "unknown"
    try:
        answer = await request.app.state.webrtc_peers.connect(
            grant, sdp, source=f"{address}:{client.port if client else 0}", address=address,
            recheck=lambda: services.media_grants.resolve(token))
    except OfferRefused as exc:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
        raise ApiError(exc.status, None, exc.message, headers=headers) from None
    return {"type": "answer", "sdp": answer}


@router.get(urls.WEBRTC_JOIN_PAGE_PATH, include_in_schema=False)
async def join_page() -> FileResponse:
    return FileResponse(str(WEB_DIR / "join.html"), media_type="text/html", headers=_PAGE_HEADERS)
