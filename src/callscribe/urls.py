"""URLs that callscribe hands out and later serves: their paths, the purpose and lifetime of the
tokens they carry, and how they are built. Shared by the control surfaces that issue them and the
adapters that check them, so neither imports the other."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from callscribe.tokens import token_signer

TWILIO_MEDIA_PATH = "/mg-autotranscribe/v1/twilio-media"
TWILIO_TOKEN_PURPOSE = "twilio-media"
ASAPP_STREAM_PATH = "/autotranscribe/v1/stream"
ASAPP_TOKEN_PURPOSE = "asapp-direct-stream"
URL_TTL_S = 300  # both URLs are valid for five minutes
# WebRTC ingest: a join token (a surface's MediaGrant) with an SDP offer, and the page that sends a
# browser's microphone through it (`?token=` names the grant).
WEBRTC_OFFER_PATH = "/v1/media/webrtc"
WEBRTC_JOIN_PAGE_PATH = "/v1/media/join"


# Cluster mode: the node with headroom whose public URL a handed-out URL names (callscribe.cluster),
# by the public URL of the node that issues it.
_placement: dict[str, Callable[[], str]] = {}


def set_placement(settings: Any, pick: Callable[[], str] | None) -> None:
    if pick is None:
        _placement.pop(settings.resolved_public_url, None)
    else:
        _placement[settings.resolved_public_url] = pick


def _ws_base(settings: Any) -> str:
    pick = _placement.get(settings.resolved_public_url)
    if pick is None:
        return str(settings.public_ws_url)
    url = pick()
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http):]
    return url


def issue_url(settings: Any, path: str, tenant: str, purpose: str, ttl_s: float = URL_TTL_S, **claims: Any) -> str:
    """ws(s)://<public url><path>?token=..., the token bound to the tenant (and any claims)."""
    token = token_signer(settings).issue(tenant, purpose, ttl_s, **claims)
    return f"{_ws_base(settings)}{path}?token={quote(token, safe='')}"


def issue_token(settings: Any, tenant: str, ttl_s: float = URL_TTL_S) -> str:
    """A bare Twilio stream token (for a `token` <Parameter>)."""
    return token_signer(settings).issue(tenant, TWILIO_TOKEN_PURPOSE, ttl_s)


def twilio_stream_url(settings: Any, tenant: str) -> str:
    return issue_url(settings, TWILIO_MEDIA_PATH, tenant, TWILIO_TOKEN_PURPOSE)


def asapp_stream_url(settings: Any, tenant: str, external_id: str | None) -> str:
    return issue_url(settings, ASAPP_STREAM_PATH, tenant, ASAPP_TOKEN_PURPOSE, external_id=external_id)
