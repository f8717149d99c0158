"""Request limits for the control surfaces: body size (413-01), per-key rate (429-01 with
Retry-After) and one request at a time per call guid (409-202).

State lives on the app (`limits_of(app)`), so two apps in one process do not share counters.
"""

from __future__ import annotations

import json
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Hashable

from fastapi import Request

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.errors import ApiError
from callscribe.config import ApiKey


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
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, None, f"Request body larger than {max_bytes} bytes")
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
