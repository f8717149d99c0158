"""Who may open an AudioHook session: the API key and the HTTP message signature of the upgrade.

Genesys sends `X-API-KEY` and, when the integration has a client secret, signs the upgrade request
(HTTP Message Signatures, the draft Genesys implements; media-protocols spec §2.1):

    Signature-Input: sig1=("@request-target" "@authority" "audiohook-organization-id"
        "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="<api key>";
        nonce="...";alg="hmac-sha256";created=<unix>;expires=<unix>
    Signature: sig1=:<base64 HMAC-SHA256 of the signature base, keyed with the decoded secret>:

The policy is the reference server's: the key must be known and equal `keyid`; every component
above must be covered; the nonce at least 22 characters and not seen before within the window;
`created` at most 10 s old (3 s of clock skew allowed either way), `expires` not passed; unsigned
requests only for a key configured without a secret. An unknown key is still run through an HMAC
(with a random key) so that it fails in about the same time as a wrong signature.

The header values are RFC 8941 structured fields; only the subset these two headers use is read
here (dictionary, inner list of strings, parameters, byte sequence), strictly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Union

from callscribe.config import AudioHookKey

REQUIRED_COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
                       "audiohook-correlation-id", "x-api-key")
MAX_SIGNATURE_AGE_S = 10
CLOCK_SKEW_S = 3
MIN_NONCE_CHARS = 22
MAX_HEADER_CHARS = 4096

# Structured fields (the subset used) ----------------------------------------------------------

Bare = Union[int, str, bytes, bool, "Token"]
Params = list[tuple[str, Bare]]


class Token(str):
    """An RFC 8941 token (serialised without quotes)."""


@dataclass(frozen=True)
class Item:
    value: Bare
    params: Params


@dataclass(frozen=True)
class InnerList:
    items: list[Item]
    params: Params


class FieldError(ValueError):
    pass


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INT = re.compile(r"-?[0-9]{1,15}")
_B64 = re.compile(r"[A-Za-z0-9+/=]*")


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _eat(self, ch: str) -> None:
        if self._peek() != ch:
            raise FieldError(f"expected {ch!r} at {self.i}")
        self.i += 1

    def _ows(self) -> None:
        while self._peek() in (" ", "\t") and self._peek():
            self.i += 1

    def _match(self, pattern: re.Pattern[str]) -> str:
        m = pattern.match(self.s, self.i)
        if not m or not m.group():
            raise FieldError(f"unexpected character at {self.i}")
        self.i = m.end()
        return m.group()

    def bare(self) -> Bare:
        c = self._peek()
        if c == '"':
            self.i += 1
            out: list[str] = []
            while True:
                c = self._peek()
                if not c:
                    raise FieldError("unterminated string")
                self.i += 1
                if c == '"':
                    return "".join(out)
                if c == "\\":
                    c = self._peek()
                    if c not in ('"', "\\"):
                        raise FieldError("bad escape in string")
                    self.i += 1
                elif not " " <= c <= "~":
                    raise FieldError("non-printable character in string")
                out.append(c)
        if c == ":":
            self.i += 1
            data = _B64.match(self.s, self.i)
            assert data is not None  # the pattern matches the empty string
            self.i = data.end()
            self._eat(":")
            try:
                return base64.b64decode(data.group(), validate=True)
            except (binascii.Error, ValueError):
                raise FieldError("bad byte sequence") from None
        if c == "?":
            self.i += 1
            flag = self._peek()
            if flag not in ("0", "1"):
                raise FieldError("bad boolean")
            self.i += 1
            return flag == "1"
        if c == "-" or c.isdigit():
            return int(self._match(_INT))
        return Token(self._match(_TOKEN))

    def params(self) -> Params:
        out: Params = []
        while self._peek() == ";":
            self.i += 1
            self._ows()
            key = self._match(_KEY)
            value: Bare = True
            if self._peek() == "=":
                self.i += 1
                value = self.bare()
            out = [(k, v) for k, v in out if k != key] + [(key, value)]
        return out

    def member(self) -> Item | InnerList:
        if self._peek() != "(":
            value = self.bare()
            return Item(value, self.params())
        self.i += 1
        items: list[Item] = []
        while True:
            while self._peek() == " ":
                self.i += 1
            if self._peek() == ")":
                self.i += 1
                return InnerList(items, self.params())
            value = self.bare()
            items.append(Item(value, self.params()))
            if self._peek() not in (" ", ")"):
                raise FieldError(f"bad inner list at {self.i}")

    def dictionary(self) -> dict[str, Item | InnerList]:
        out: dict[str, Item | InnerList] = {}
        self._ows()
        while self.i < len(self.s):
            key = self._match(_KEY)
            if self._peek() == "=":
                self.i += 1
                out[key] = self.member()
            else:
                out[key] = Item(True, self.params())
            self._ows()
            if self.i >= len(self.s):
                break
            self._eat(",")
            self._ows()
            if self.i >= len(self.s):
                raise FieldError("trailing comma")
        return out


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """An RFC 8941 dictionary (the subset above); FieldError when it is not one."""
    if len(text) > MAX_HEADER_CHARS:
        raise FieldError("field too long")
    return _Parser(text.strip(" ")).dictionary()


def _serialize_bare(value: Bare) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode() + ":"
    if isinstance(value, Token):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_params(params: Params) -> str:
    return "".join(f";{k}" if v is True else f";{k}={_serialize_bare(v)}" for k, v in params)


def serialize_inner_list(inner: InnerList) -> str:
    items = " ".join(_serialize_bare(i.value) + _serialize_params(i.params) for i in inner.items)
    return f"({items}){_serialize_params(inner.params)}"


# Verification -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    """The key that authenticated the request, or why there is none (safe to log: no secrets)."""

    key: AudioHookKey | None
    reason: str = ""


class NonceCache:
    """Nonces seen while their signature could still be accepted: a replay within the window fails."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def add(self, key_id: str, nonce: str, now: float) -> bool:
        """False when this nonce was already used with this key."""
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            expiry = self._seen.get((key_id, nonce))
            if expiry is not None and expiry > now:
                return False
            self._seen[(key_id, nonce)] = now + MAX_SIGNATURE_AGE_S + 2 * CLOCK_SKEW_S
            return True


_NONCES = NonceCache()


def signature_base(components: list[tuple[str, str]], signature_params: str) -> bytes:
    lines = [f'"{name}": {value}' for name, value in components]
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else value.strip()


def verify(keys: list[AudioHookKey], headers: Mapping[str, str], *, request_target: str, authority: str,
           now: float | None = None, nonces: NonceCache | None = None) -> AuthResult:
    """Check an upgrade request. `headers` is case-insensitive (Starlette's Headers) or lower-cased;
    `request_target` is the path and query as sent; `authority` the Host header."""
    now = time.time() if now is None else now
    nonces = _NONCES if nonces is None else nonces
    api_key = _header(headers, "x-api-key")
    if not api_key:
        return AuthResult(None, "missing X-API-KEY")
    key = next((k for k in keys if hmac.compare_digest(k.api_key.encode(), api_key.encode())), None)
    raw_input, raw_signature = headers.get("signature-input"), headers.get("signature")
    if raw_input is None and raw_signature is None:
        if key is None:
            return AuthResult(None, "unknown API key")
        if key.secret:
            return AuthResult(None, "request not signed, but the key has a client secret")
        return AuthResult(key)
    if raw_input is None or raw_signature is None:
        return AuthResult(None, "Signature and Signature-Input must come together")
    try:
        inputs, signatures = parse_dictionary(raw_input), parse_dictionary(raw_signature)
    except FieldError as exc:
        return AuthResult(None, f"malformed signature header: {exc}")
    label = next(iter(inputs), None)
    if label is None or len(inputs) != 1:
        return AuthResult(None, "Signature-Input must carry exactly one signature")
    spec, sig = inputs[label], signatures.get(label)
    if not isinstance(spec, InnerList) or not all(isinstance(i.value, str) and not i.params for i in spec.items):
        return AuthResult(None, "Signature-Input is not a list of component names")
    if not isinstance(sig, Item) or not isinstance(sig.value, bytes):
        return AuthResult(None, f"no signature labelled {label}")
    params = dict(spec.params)
    names = [str(i.value) for i in spec.items]
    missing = [c for c in REQUIRED_COMPONENTS if c not in names]
    if missing:
        return AuthResult(None, f"signature does not cover {', '.join(missing)}")
    keyid, nonce, alg = params.get("keyid"), params.get("nonce"), params.get("alg", "hmac-sha256")
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(keyid, str) or keyid != api_key:
        return AuthResult(None, "signature keyid differs from X-API-KEY")
    if alg != "hmac-sha256":
        return AuthResult(None, "signature algorithm is not hmac-sha256")
    if not isinstance(nonce, str) or len(nonce) < MIN_NONCE_CHARS:
        return AuthResult(None, "signature nonce missing or shorter than 22 characters")
    if not isinstance(created, int) or isinstance(created, bool):
        return AuthResult(None, "signature has no created time")
    if created > now + CLOCK_SKEW_S or now - created > MAX_SIGNATURE_AGE_S + CLOCK_SKEW_S:
        return AuthResult(None, "signature created time outside the accepted window")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)
                                or expires + CLOCK_SKEW_S < now):
        return AuthResult(None, "signature expired")
    components: list[tuple[str, str]] = []
    for name in names:
        if name == "@request-target":
            value: str | None = request_target
        elif name == "@authority":
            value = authority.strip().lower()
        elif name.startswith("@"):
            return AuthResult(None, f"unsupported signature component {name}")
        else:
            value = _header(headers, name)
        if value is None:
            return AuthResult(None, f"signed header {name} is missing")
        components.append((name, value))
    base = signature_base(components, serialize_inner_list(spec))
    secret = key.secret if key is not None else os.urandom(32)  # same work for an unknown key
    expected = hmac.new(secret, base, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig.value) or key is None:
        return AuthResult(None, "signature does not verify" if key is not None else "unknown API key")
    if not nonces.add(keyid, nonce, now):
        return AuthResult(None, "signature nonce replayed")
    return AuthResult(key)
