"""Who may open a Twilio media stream: the stream-URL token and the X-Twilio-Signature.

The token is what GET /mg-autotranscribe/v1/twilio-media-stream-url hands out (callscribe.urls):
signed, bound to the caller's tenant, valid for five minutes, and checked only when a stream
connects (so a stream outlives it, and one URL may start any number of streams while it is valid).

Twilio signs the WebSocket upgrade like any webhook: base64(HMAC-SHA1(auth token, URL)) over the
exact URL it was given, which is the ws(s):// form of our public URL, query included. Behind a TLS
terminator the app sees another scheme and host, so the URL is rebuilt from the configured public
URL rather than from the request.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from twilio.request_validator import RequestValidator

from callscribe.config import Settings
from callscribe.tokens import token_signer
from callscribe.urls import TWILIO_MEDIA_PATH as STREAM_PATH
from callscribe.urls import TWILIO_TOKEN_PURPOSE as TOKEN_PURPOSE
from callscribe.urls import URL_TTL_S as TOKEN_TTL_S
from callscribe.urls import issue_token
from callscribe.urls import twilio_stream_url as stream_url

__all__ = ["STREAM_PATH", "TOKEN_PURPOSE", "TOKEN_TTL_S", "issue_token", "stream_url", "tenant_of_token", "token_from_query",
           "signature_ok"]


def _http_base(public_url: str) -> str:
    if public_url.startswith("wss://"):
        return "https://" + public_url[len("wss://"):]
    if public_url.startswith("ws://"):
        return "http://" + public_url[len("ws://"):]
    return public_url


def tenant_of_token(settings: Settings, token: str | None) -> str | None:
    """The tenant a stream token is bound to, or None when it is missing, forged or expired."""
    if not token:
        return None
    claims = token_signer(settings).verify(token, TOKEN_PURPOSE)
    if not claims:
        return None
    tenant = claims.get("tenant")
    return tenant if isinstance(tenant, str) and tenant else None


def token_from_query(query_string: str) -> str | None:
    values = parse_qs(query_string, keep_blank_values=True).get("token")
    return values[0] if values else None


def signed_urls(settings: Settings, query_string: str) -> list[str]:
    """The URLs Twilio may have signed for a request to the stream path with this query.

    The ws(s) form is what Twilio was given; the http(s) form is accepted too, because it carries
    the same secret and some deployments hand Twilio that spelling.
    """
    suffix = STREAM_PATH + (f"?{query_string}" if query_string else "")
    return [settings.public_ws_url + suffix, _http_base(settings.resolved_public_url) + suffix]


def signature_ok(settings: Settings, query_string: str, signature: str | None,
                 signature_settings: str | None = None) -> bool:
    """Whether X-Twilio-Signature matches. Always True when no Twilio auth token is configured.

    `signature_settings` is the X-Twilio-Webhooks-Signature-Settings header, which may ask for
    HMAC-SHA256 instead of the default HMAC-SHA1 (the twilio library reads it for us).
    """
    if not settings.twilio_auth_token:
        return True
    if not signature:
        return False
    algorithm = None
    if signature_settings:
        from twilio import request_validator

        pick = getattr(request_validator, "get_signature_algorithm", None)
        algorithm = pick(signature_settings) if pick is not None else None
    validator = RequestValidator(settings.twilio_auth_token)
    kwargs = {"algorithm": algorithm} if algorithm else {}
    return any(validator.validate(url, {}, signature, **kwargs) for url in signed_urls(settings, query_string))
