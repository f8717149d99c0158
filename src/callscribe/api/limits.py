"""Request limits for the control surfaces: body size (413-01), per-key rate (429-01 with
Retry-After), one request at a time per call guid (409-202), and failed-auth throttling per source
address (`AuthFailureThrottle`, 429-01 on HTTP and 4429 on WebSockets).

State lives on the app (`limits_of(app)`), so two apps in one process do not share counters.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, MutableMapping

from fastapi import Request

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.errors import ApiError, ErrorShapes
from callscribe.config import ApiKey

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, bursts up to `per_minute`."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed; otherwise the seconds to wait before the next request would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class InFlight:
    """Keys with a request in progress; a second request on the same key is refused (409-202)."""

    def __init__(self) -> None:
        self._busy: set[Hashable] = set()

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        if key in self._busy:
            raise ApiError(409, "409-202", "Another request for this guid is in progress")
        self._busy.add(key)
        try:
            yield
        finally:
            self._busy.discard(key)


class Limits:
    def __init__(self, rate_limit_per_minute: int):
        self.rate = RateLimiter(rate_limit_per_minute)
        self.in_flight = InFlight()


def limits_of(app: Any) -> Limits:
    limits = getattr(app.state, "control_limits", None)
    if limits is None:
        limits = app.state.control_limits = Limits(app.state.services.settings.rate_limit_per_minute)
    return limits


def check_content_length(request: Request, max_bytes: int) -> None:
    """413-01 at once when the declared length is over the limit (before reading anything)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise ApiError(413, None, f"Request body larger than {max_bytes} bytes")
        except ValueError:
            raise ApiError(400, None, "Bad Content-Length") from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, read no further than the limit whatever Content-Length said (chunked bodies too)."""
    check_content_length(request, max_bytes)
    return await read_capped(request.stream(), max_bytes)


async def read_capped(stream: AsyncIterator[bytes], max_bytes: int, what: str = "Request body") -> bytes:
    """Everything `stream` yields, or 413-01 as soon as it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, None, f"{what} larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int, *, optional: bool = False) -> Any:
    """The parsed JSON body; 400-01 when it is not JSON (an empty body is None when optional)."""
    raw = await read_body(request, max_bytes)
    if optional and not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, None, "Request body is not valid JSON") from None


def authorize(request: Request) -> ApiKey:
    """The caller's key (401-01 if none), after its rate limit (429-01 with Retry-After)."""
    services = request.app.state.services
    check_content_length(request, services.settings.max_body_bytes)
    api_id, secret = credentials_from_headers(request.headers)
    key = authenticate(services.api_keys, api_id, secret)
    if key is None:
        raise ApiError(401, None, "Unauthorized")
    wait = limits_of(request.app).rate.take(key.id)
    if wait > 0:
        raise ApiError(429, None, "Too Many Requests", headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return key


class FailureWindow:
    """Failures per source in the last `window_s` seconds; a source at `limit` is blocked until its
    oldest failure leaves the window. At most `max_sources` are tracked (the stalest go first), so
    a flood of addresses cannot grow memory without bound."""

    def __init__(self, limit: int, window_s: float = 60.0, max_sources: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_sources = max_sources
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, source: str, now: float) -> deque[float] | None:
        times = self._failures.get(source)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if times is not None and not times:
            del self._failures[source]
            return None
        return times

    def blocked_for(self, source: str, now: float | None = None) -> float:
        """0 when the source may try; else the seconds until it may again."""
        now = time.monotonic() if now is None else now
        times = self._recent(source, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[0] + self.window_s - now

    def record(self, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(source, now)
        if times is None:
            times = self._failures[source] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        self._failures.move_to_end(source)
        times.append(now)


#: Paths that answer without credentials (probes); never throttled.
_UNTHROTTLED = frozenset({"/healthz", "/readyz"})


def _is_auth_failure(message: Message) -> bool:
    """An answer that means "bad credentials": HTTP 401, a refused WebSocket upgrade (401/403), a
    WebSocket closed with 4401, or with 1008 (policy) for a token or credentials."""
    kind = message["type"]
    if kind in ("http.response.start", "websocket.http.response.start"):
        status = message.get("status")
        return status == 401 or (kind == "websocket.http.response.start" and status == 403)
    if kind == "websocket.close":
        code, reason = message.get("code"), str(message.get("reason") or "").lower()
        return code == 4401 or (code == 1008 and ("token" in reason or "credential" in reason))
    return False


class AuthFailureThrottle:
    """ASGI middleware: after `per_minute` failed authentications from one address within a minute,
    that address gets 429-01 (with Retry-After) on HTTP and close code 4429 on WebSockets, whatever
    it sends, until the minute has passed. Guessing secrets becomes slow; other sources are not
    affected. The address is the peer's (behind a proxy, run uvicorn with --proxy-headers)."""

    def __init__(self, app: Callable[[Scope, Callable, Callable], Awaitable[None]], per_minute: int,
                 shapes: ErrorShapes | None = None) -> None:
        self.app = app
        self.failures = FailureWindow(per_minute)
        self.shapes = shapes or ErrorShapes()

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in _UNTHROTTLED:
            return await self.app(scope, receive, send)
        source = (scope.get("client") or ("unknown",))[0]
        wait = self.failures.blocked_for(source)
        if wait > 0:
            return await self._refuse(scope, send, wait)

        async def watching_send(message: Message) -> None:
            if _is_auth_failure(message):
                self.failures.record(source)
            await send(message)

        await self.app(scope, receive, watching_send)

    async def _refuse(self, scope: Scope, send: Callable, wait: float) -> None:
        if scope["type"] == "websocket":  # before accept: the client sees the close (an HTTP 403)
            await send({"type": "websocket.close", "code": 4429, "reason": "too many failed authentications"})
            return
        response = self.shapes.response(scope.get("path", ""), 429, None,
                                        "Too many failed authentications from this address",
                                        headers={"Retry-After": str(max(1, math.ceil(wait)))})
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
