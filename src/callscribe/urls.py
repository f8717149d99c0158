"""URLs that callscribe hands out and later serves: their paths, the purpose and lifetime of the
tokens they carry, and how they are built. Shared by the control surfaces that issue them and the
adapters that check them, so neither imports the other."""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import quote

from callscribe.tokens import token_signer

TWILIO_MEDIA_PATH = "/mg-autotranscribe/v1/twilio-media"
TWILIO_TOKEN_PURPOSE = "twilio-media"
ASAPP_STREAM_PATH = "/autotranscribe/v1/stream"
ASAPP_TOKEN_PURPOSE = "asapp-direct-stream"
ASAPP_STREAM_NAMESPACE = "autotranscribe"  # the calls of direct streams (guid = the URL's externalId)
URL_TTL_S = 300  # both URLs are valid for five minutes
# WebRTC ingest: a join token (a surface's MediaGrant) with an SDP offer, and the page that sends a
# browser's microphone through it (`?token=` names the grant).
WEBRTC_OFFER_PATH = "/v1/media/webrtc"
WEBRTC_JOIN_PAGE_PATH = "/v1/media/join"


# Cluster mode: the node with headroom whose public URL a handed-out URL names (callscribe.cluster),
# by the public URL of the node that issues it; for a URL of a known call (tenant, namespace, guid),
# the node that holds or will hold that call, so all its legs meet on one node.
_placement: dict[str, Callable[[], str]] = {}
_call_placement: dict[str, Callable[[str, str, str], Awaitable[str]]] = {}


def set_placement(settings: Any, pick: Callable[[], str] | None,
                  pick_for_call: Callable[[str, str, str], Awaitable[str]] | None = None) -> None:
    if pick is None:
        _placement.pop(settings.resolved_public_url, None)
        _call_placement.pop(settings.resolved_public_url, None)
    else:
        _placement[settings.resolved_public_url] = pick
        if pick_for_call is not None:
            _call_placement[settings.resolved_public_url] = pick_for_call


def _ws(url: str) -> str:
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url[len(http):]
    return url


def _ws_base(settings: Any) -> str:
    pick = _placement.get(settings.resolved_public_url)
    if pick is None:
        return str(settings.public_ws_url)
    return _ws(pick())


async def _ws_base_for_call(settings: Any, tenant: str, namespace: str, guid: str) -> str:
    pick = _call_placement.get(settings.resolved_public_url)
    if pick is None:
        return _ws_base(settings)
    return _ws(await pick(tenant, namespace, guid))


def issue_url(settings: Any, path: str, tenant: str, purpose: str, ttl_s: float = URL_TTL_S, *,
              base: str | None = None, **claims: Any) -> str:
    """ws(s)://<public url><path>?token=..., the token bound to the tenant (and any claims); `base`
    replaces ws(s)://<public url> (a placed call's node)."""
    token = token_signer(settings).issue(tenant, purpose, ttl_s, **claims)
    return f"{base or _ws_base(settings)}{path}?token={quote(token, safe='')}"


def issue_token(settings: Any, tenant: str, ttl_s: float = URL_TTL_S) -> str:
    """A bare Twilio stream token (for a `token` <Parameter>)."""
    return token_signer(settings).issue(tenant, TWILIO_TOKEN_PURPOSE, ttl_s)


def twilio_stream_url(settings: Any, tenant: str) -> str:
    return issue_url(settings, TWILIO_MEDIA_PATH, tenant, TWILIO_TOKEN_PURPOSE)


async def asapp_stream_url(settings: Any, tenant: str, external_id: str | None) -> str:
    """With an externalId the URL names the node of that call (cluster mode), so its legs meet."""
    base = None if external_id is None else await _ws_base_for_call(settings, tenant, ASAPP_STREAM_NAMESPACE,
                                                                    external_id)
    return issue_url(settings, ASAPP_STREAM_PATH, tenant, ASAPP_TOKEN_PURPOSE, base=base, external_id=external_id)
