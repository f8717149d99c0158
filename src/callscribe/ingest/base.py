"""What every WebSocket media adapter shares: the session loop, one error type with named close
codes, JSON field readers, and a per-track timeline.

An adapter subclasses `WebSocketAdapter` and implements only its protocol: `on_text` / `on_bytes`
for its messages, `end` for the end of its media, and optionally `on_refused` to tell the peer why
in the protocol's own words before the socket closes. `run_session` does the rest the same way for
every protocol: an absolute deadline from the upgrade to a valid start, an idle timeout after it,
a size cap per message, a disconnect ends the media with a reason, an `AdapterError` closes the
socket with its code and one log line, any other exception closes it with 1011 and a traceback in
the log, and nothing one session does reaches another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Awaitable, Callable

from starlette.exceptions import WebSocketException
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketState

from callscribe.ingest.limits import UNLIMITED, ConnectionLimits, Slot

log = logging.getLogger(__name__)

MAX_JSON_INT = 2**53


class Close(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED = 1003
    INVALID = 1007
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    TRY_LATER = 1013


def close_reason(reason: str) -> str:
    """A close frame's reason must fit in 123 bytes of UTF-8."""
    return reason.encode()[:123].decode(errors="ignore")


class AdapterError(WebSocketException):
    """The session cannot go on. `reason` is safe to log and to show the peer; `status` is the
    protocol's own status code for it, when the protocol has one (ASAPP's 4040, say)."""

    def __init__(self, reason: str, code: int = Close.INVALID, *, status: int | None = None):
        super().__init__(code=int(code), reason=close_reason(reason))
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return self.reason


# JSON field readers -------------------------------------------------------------------------


def json_object(data: str | bytes, *, what: str = "message") -> dict[str, Any]:
    """One text frame as a JSON object, or AdapterError."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        raise AdapterError(f"{what} is not JSON") from None
    if not isinstance(msg, dict):
        raise AdapterError(f"{what} is not a JSON object")
    return msg


def obj(container: dict[str, Any], key: str, *, required: bool = True, where: str = "") -> dict[str, Any]:
    value = container.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise AdapterError(f"'{where}{key}' must be an object")
    return value


def string(container: dict[str, Any], key: str, *, required: bool = False, where: str = "",
           max_len: int | None = None) -> str | None:
    value = container.get(key)
    if value is None:
        if required:
            raise AdapterError(f"'{where}{key}' is missing")
        return None
    if not isinstance(value, str):
        raise AdapterError(f"'{where}{key}' must be a string")
    if max_len is not None and len(value) > max_len:
        raise AdapterError(f"'{where}{key}' is longer than {max_len} characters")
    return value


def integer(container: dict[str, Any], key: str, *, where: str = "") -> int | None:
    """A non-negative integer sent as a JSON number or as a string of digits (Twilio sends both)."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise AdapterError(f"'{where}{key}' must be a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value) <= 16:
        number = int(value.strip())
    else:
        raise AdapterError(f"'{where}{key}' must be a number, got {type(value).__name__}")
    if not 0 <= number < MAX_JSON_INT:
        raise AdapterError(f"'{where}{key}' is out of range")
    return number


def boolean(container: dict[str, Any], key: str, default: bool, *, where: str = "") -> bool:
    value = container.get(key, default)
    if not isinstance(value, bool):
        raise AdapterError(f"'{where}{key}' must be a boolean")
    return value


# Timelines ----------------------------------------------------------------------------------


@dataclass
class TrackTimeline:
    """Where one track stands, in samples since its media began.

    A frame stamped within `jitter_ms` of where the track stands continues it; one stamped further
    ahead starts after a gap (the registry skips the gap on the track's timeline: nothing is
    synthesised for it); one stamped behind loses the part that overlaps what the track already has.
    """

    sample_rate: int
    jitter_ms: int = 10
    max_gap_ms: int = 60_000
    samples: int = 0

    def place(self, timestamp_ms: int | None, n: int) -> tuple[int, int | None]:
        """Position a frame of `n` samples stamped `timestamp_ms` (None: right after the last).

        Returns (samples to drop from the frame's start, timestamp to give the registry: set only
        when the frame starts after a gap). A jump beyond `max_gap_ms` is a broken clock, refused."""
        if timestamp_ms is None:
            self.samples += n
            return 0, None
        at = timestamp_ms * self.sample_rate // 1000
        gap = at - self.samples
        if abs(gap) * 1000 <= self.jitter_ms * self.sample_rate:
            self.samples += n
            return 0, None
        if gap > 0:
            gap_ms = gap * 1000 // self.sample_rate
            if gap_ms > self.max_gap_ms:
                raise AdapterError(f"timestamp jumps {gap_ms} ms ahead", Close.POLICY)
            self.samples = at + n
            return 0, timestamp_ms
        drop = min(n, -gap)
        self.samples += n - drop
        return drop, None


# The session loop ---------------------------------------------------------------------------


class WebSocketAdapter:
    """One media session over a WebSocket. Subclasses set `started` once the protocol's start
    message is accepted and implement the handlers; each handler returns True when the session is
    over and the socket should close normally."""

    name = "media"  # how log lines name the protocol
    log = log  # the protocol's logger, so operators can filter one protocol's lines
    start_timeout_s = 15.0  # from the upgrade to a valid start, however many other messages arrive
    idle_timeout_s = 60.0  # between messages once started
    max_duration_s: float | None = None  # from the start to the end of the session (every protocol has one)
    max_message_bytes = 1 << 20
    close_code: int = Close.NORMAL  # how a normal end closes the socket, and why
    close_reason = "finished"

    started = False

    @property
    def label(self) -> str:
        """How log lines name this session."""
        return "session"

    async def on_text(self, text: str) -> bool:
        raise AdapterError(f"{self.name} sends no text frames", Close.UNSUPPORTED)

    async def on_bytes(self, data: bytes) -> bool:
        raise AdapterError(f"{self.name} sends no binary frames", Close.UNSUPPORTED)

    def timeout_error(self, started: bool, seconds: float) -> AdapterError:
        """What a deadline that passed means in this protocol."""
        return AdapterError(f"no {'message' if started else 'start'} for {seconds:.0f} s", Close.POLICY)

    def too_long_error(self, seconds: float) -> AdapterError:
        """What the end of the maximum session length means in this protocol."""
        return AdapterError(f"session longer than the maximum of {seconds:.0f} s", Close.POLICY)

    async def on_refused(self, error: AdapterError) -> None:
        """Tell the peer why, in the protocol's own shape, before the socket closes."""

    async def end(self, reason: str) -> None:
        """The media ended (normal end, disconnect, error, shutdown). Must be idempotent and not raise."""


def _disconnect_reason(code: int) -> str:
    if code == Close.TOO_BIG:
        return "message too large for the server"
    if code in (Close.NORMAL, Close.GOING_AWAY, 1005):
        return "closed by the peer"
    return f"connection lost (close code {code})"


class JsonSender:
    """JSON text messages to one socket, one at a time (transcripts are sent from other tasks than the
    session loop's). A peer that went away is the session loop's to notice, not the sender's."""

    def __init__(self, ws: WebSocket, what: str) -> None:
        self.ws = ws
        self.what = what
        self._lock = asyncio.Lock()

    async def __call__(self, payload: dict[str, Any]) -> None:
        async with self._lock:
            try:
                await self.ws.send_text(json.dumps(payload))
            except Exception:
                log.debug("send on a closed %s", self.what, exc_info=True)


async def admit(ws: WebSocket, limits: ConnectionLimits | None,
                refuse: Callable[[str], Awaitable[None]] | None = None) -> Slot | None:
    """A slot for this socket under the process's connection limits; None when there is none,
    after refusing the upgrade with 503 (through `refuse(reason)`, for a surface's own shape)."""
    slot = (limits or UNLIMITED).take(ws.client.host if ws.client else "unknown")
    if isinstance(slot, str):
        log.warning("media socket from %s refused: %s", peer_of(ws), slot)
        await (refuse(slot) if refuse is not None else deny(ws, 503, slot))
        return None
    return slot


async def run_session(ws: WebSocket, adapter: WebSocketAdapter, slot: Slot | None = None) -> None:
    """Drive one accepted WebSocket through `adapter` until it ends, then close the socket."""
    try:
        code, reason = await _loop(ws, adapter, slot)
        if code is not None:
            await close(ws, code, reason)
    finally:
        if slot is not None:
            slot.release()


async def _loop(ws: WebSocket, adapter: WebSocketAdapter, slot: Slot | None) -> tuple[int | None, str]:
    """Returns the close code and reason to send (None when the peer already left). The adapter's
    `end` is called exactly once, whatever happens, cancellation included."""
    why = "server shutdown"  # what ends the media if nothing below says otherwise (cancellation)
    try:
        code, why = await _receive_until_done(ws, adapter, slot)
        return code, why
    except AdapterError as exc:
        adapter.log.warning("%s %s closed: %s", adapter.name, adapter.label, exc.reason)
        why = f"protocol error: {exc.reason}"
        try:
            await adapter.on_refused(exc)
        except Exception:
            log.debug("telling the peer why failed", exc_info=True)
        return exc.code, exc.reason
    except Exception:
        adapter.log.exception("%s %s failed", adapter.name, adapter.label)
        why = "internal error"
        return Close.INTERNAL, "internal error"
    finally:
        try:
            await adapter.end(why)
        except Exception:
            adapter.log.exception("%s %s: ending the media failed", adapter.name, adapter.label)


async def _receive_until_done(ws: WebSocket, adapter: WebSocketAdapter, slot: Slot | None) -> tuple[int | None, str]:
    deadline = time.monotonic() + adapter.start_timeout_s
    ends_at: float | None = None  # set at the start: the end of the maximum session length
    while True:
        started = adapter.started
        now = time.monotonic()
        if started and ends_at is None:
            if slot is not None:
                slot.started()
            ends_at = now + adapter.max_duration_s if adapter.max_duration_s else float("inf")
        if ends_at is not None and now >= ends_at:
            raise adapter.too_long_error(adapter.max_duration_s or 0)
        timeout = min(adapter.idle_timeout_s, (ends_at or now) - now) if started else max(0.0, deadline - now)
        try:
            message = await asyncio.wait_for(ws.receive(), timeout)
        except asyncio.TimeoutError:
            if ends_at is not None and time.monotonic() >= ends_at:
                raise adapter.too_long_error(adapter.max_duration_s or 0) from None
            raise adapter.timeout_error(started, adapter.idle_timeout_s if started else adapter.start_timeout_s) \
                from None
        if message["type"] == "websocket.disconnect":
            why = _disconnect_reason(message.get("code", 1005))
            if adapter.started:
                adapter.log.info("%s %s: %s", adapter.name, adapter.label, why)
            return None, why
        text, data = message.get("text"), message.get("bytes")
        size = len(data or b"") if text is None else (
            len(text) if len(text) * 4 <= adapter.max_message_bytes else len(text.encode()))  # bytes, not characters
        if size > adapter.max_message_bytes:
            raise AdapterError(f"message larger than {adapter.max_message_bytes} bytes", Close.TOO_BIG)
        if await (adapter.on_text(text) if text is not None else adapter.on_bytes(data or b"")):
            return adapter.close_code, adapter.close_reason


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close if still open; a peer that already left needs nothing more."""
    if ws.client_state == WebSocketState.CONNECTED and ws.application_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=close_reason(reason))
        except Exception:
            log.debug("closing a socket the peer left", exc_info=True)


async def deny(ws: WebSocket, status: int, message: str, body: dict[str, Any] | None = None, *,
               response: Response | None = None) -> None:
    """Refuse the upgrade with an HTTP answer: `{"error": {"code", "message"}}`, or the surface's own
    `body`, or a whole `response` (a surface that also sends headers)."""
    try:
        if response is None:
            if body is None:
                body = {"error": {"requestId": str(uuid.uuid4()), "code": f"{status}-01", "message": message}}
            response = JSONResponse(body, status_code=status)
        await ws.send_denial_response(response)
    except RuntimeError:  # the server lacks the denial-response extension: a close means 403
        await ws.close(code=Close.POLICY)


def peer_of(ws: WebSocket) -> str:
    client = ws.client
    return f"{client.host}:{client.port}" if client else "unknown"
