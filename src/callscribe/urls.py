"""URLs that callscribe hands out and later serves: their paths, the purpose and lifetime of the
tokens they carry, and how they are built. Shared by the control surfaces that issue them and the
adapters that check them, so neither imports the other."""

from __future__ import annotations

from typing import Any
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


def issue_url(settings: Any, path: str, tenant: str, purpose: str, ttl_s: float = URL_TTL_S, **claims: Any) -> str:
    """ws(s)://<public url><path>?token=..., the token bound to the tenant (and any claims)."""
    token = token_signer(settings).issue(tenant, purpose, ttl_s, **claims)
    return f"{settings.public_ws_url}{path}?token={quote(token, safe='')}"


def issue_token(settings: Any, tenant: str, ttl_s: float = URL_TTL_S) -> str:
    """A bare Twilio stream token (for a `token` <Parameter>)."""
    return token_signer(settings).issue(tenant, TWILIO_TOKEN_PURPOSE, ttl_s)


def twilio_stream_url(settings: Any, tenant: str) -> str:
    return issue_url(settings, TWILIO_MEDIA_PATH, tenant, TWILIO_TOKEN_PURPOSE)


def asapp_stream_url(settings: Any, tenant: str, external_id: str | None) -> str:
    return issue_url(settings, ASAPP_STREAM_PATH, tenant, ASAPP_TOKEN_PURPOSE, external_id=external_id)
