"""API credentials: the same id/secret pair authenticates every control surface.

ASAPP sends `asapp-api-id` / `asapp-api-secret`; memories.ai sends `Authorization: id:secret`; the
native API accepts either, or HTTP Basic. Secrets are compared in constant time, and an unknown id
costs the same as a wrong secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from typing import Mapping, Sequence

from callscribe.config import ApiKey

_DUMMY_SECRET = secrets.token_urlsafe(32)


def authenticate(keys: Sequence[ApiKey], api_id: str | None, secret: str | None) -> ApiKey | None:
    """The key whose id and secret match, or None. Constant time in the secret."""
    if not api_id or secret is None:
        return None
    match = next((k for k in keys if hmac.compare_digest(k.id.encode(), api_id.encode())), None)
    expected = match.secret if match else _DUMMY_SECRET
    ok = hmac.compare_digest(expected.encode(), secret.encode())
    return match if ok and match is not None else None


def credentials_from_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(id, secret) from ASAPP headers, `Authorization: Basic …`, `Authorization: Bearer id:secret`
    or a bare `Authorization: id:secret`; (None, None) when none is present."""
    api_id, secret = headers.get("asapp-api-id"), headers.get("asapp-api-secret")
    if api_id is not None or secret is not None:
        return api_id, secret
    auth = headers.get("authorization")
    if not auth:
        return None, None
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() == "basic" and rest:
        try:
            auth = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
    elif scheme.lower() == "bearer" and rest:
        auth = rest.strip()
    api_id, sep, secret = auth.partition(":")
    return (api_id, secret) if sep else (None, None)


def bearer_matches(headers: Mapping[str, str], token: str) -> bool:
    """`Authorization: Bearer <token>` names exactly `token` (constant time)."""
    scheme, _, given = (headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
