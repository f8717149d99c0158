"""Short-lived signed tokens bound to a tenant (stream URLs handed out by the control APIs).

A token is `base64url(json claims) "." base64url(HMAC-SHA256)`. The HMAC secret is generated once and
kept in the data dir (mode 0600), so tokens survive a restart of callscribe and are not valid for any
other installation. Every token names a `purpose` so a token issued for one kind of URL cannot open
another kind.

    signer = token_signer(settings)
    tok = signer.issue("acme", "asapp-stream", 300, external_id="call-1")
    signer.verify(tok, "asapp-stream")  # {"tenant": "acme", "purpose": ..., "exp": ..., "external_id": "call-1"}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Hashable

from callscribe.secretfiles import load_or_create

_SECRET_FILE = "token-secret"
_RESERVED = {"tenant", "purpose", "exp", "iat", "nonce"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies tokens with one secret."""

    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("token secret too short")
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def issue(self, tenant: str, purpose: str, ttl_s: float, **claims: Any) -> str:
        """A token for `tenant` and `purpose`, valid for `ttl_s` seconds; extra claims must be JSON."""
        clash = _RESERVED & claims.keys()
        if clash:
            raise ValueError(f"reserved claim names: {sorted(clash)}")
        now = time.time()
        body = {"tenant": tenant, "purpose": purpose, "iat": int(now), "exp": now + ttl_s,
                "nonce": secrets.token_hex(6), **claims}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return _b64(payload) + "." + _b64(self._sign(payload))

    def verify(self, token: str | None, purpose: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token of this purpose; None for anything else."""
        if not token or not isinstance(token, str) or len(token) > 4096:
            return None
        payload_b64, sep, sig_b64 = token.partition(".")
        if not sep:
            return None
        try:
            payload, sig = _unb64(payload_b64), _unb64(sig_b64)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._sign(payload), sig):
            return None
        try:
            claims = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(claims, dict) or claims.get("purpose") != purpose:
            return None
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < time.time() or not isinstance(claims.get("tenant"), str):
            return None
        return claims


def load_or_create_secret(data_dir: Path) -> bytes:
    """The installation's token secret, made on first use."""
    return bytes.fromhex(load_or_create(Path(data_dir) / _SECRET_FILE, lambda: secrets.token_hex(32)))


class TokenUses:
    """The first use of a stream token binds it (to a call, a call's track, a speaker): a URL that
    leaked cannot be used to claim another call or another speaker of the same call while it is
    valid. Reconnects with the same binding are allowed."""

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._uses: dict[bytes, tuple[Hashable, float]] = {}
        self._lock = threading.Lock()

    def bind(self, token: str, binding: Hashable, ttl_s: float) -> bool:
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        with self._lock:
            if len(self._uses) >= self.MAX_ENTRIES:
                self._uses = {k: v for k, v in self._uses.items() if v[1] > now}
            current = self._uses.get(key)
            if current is not None and current[1] > now:
                return current[0] == binding
            self._uses[key] = (binding, now + ttl_s)
            return True

    async def bind_async(self, token: str, binding: Hashable, ttl_s: float) -> bool:
        """`bind` for the event loop: a cluster node asks Redis here without blocking the loop."""
        return self.bind(token, binding, ttl_s)


_signers: dict[str, TokenSigner] = {}
_signers_lock = threading.Lock()


def token_signer(settings: Any) -> TokenSigner:
    """The signer of the installation whose data dir `settings.data_dir` names (cached). A cluster
    node signs with the secret every node shares (setting or Redis), never its own data dir's."""
    if getattr(settings, "token_secret", None) or getattr(settings, "redis_url", None):
        return _shared_signer(settings)
    key = str(Path(settings.data_dir).resolve())
    with _signers_lock:
        signer = _signers.get(key)
        if signer is None:
            signer = _signers[key] = TokenSigner(load_or_create_secret(Path(key)))
        return signer


def _shared_signer(settings: Any) -> TokenSigner:
    key = "shared:" + hashlib.sha256(f"{settings.token_secret}|{settings.redis_url}".encode()).hexdigest()
    with _signers_lock:
        signer = _signers.get(key)
        if signer is None:
            if settings.token_secret:
                secret = hashlib.sha256(settings.token_secret.encode()).digest()
            else:
                from callscribe.cluster.secrets import shared_secret

                secret = bytes.fromhex(shared_secret(settings.redis_url, "token", lambda: secrets.token_hex(32))[0])
            signer = _signers[key] = TokenSigner(secret)
        return signer
