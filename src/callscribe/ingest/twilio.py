"""Twilio Media Streams: message parsing, validation and the per-stream state machine.

This module knows the protocol and nothing about sockets: `parse_message` turns one text frame into
a typed message (or raises `StreamError`), and `TwilioStream` drives one stream through
connected -> start -> media/dtmf/mark -> stop, handing the call registry timed PCM per track.
The WebSocket endpoint (`twilio_endpoint.py`) feeds it frames and closes the socket with the code
and reason of any `StreamError`.

Traps handled here (see the media-protocols spec, section 1):
- numbers arrive as JSON strings (`sequenceNumber`, `chunk`, `timestamp`); `sampleRate` and
  `channels` as numbers; both forms are accepted everywhere;
- the two tracks of a fork arrive as separate, roughly alternating messages whose counters may or
  may not be shared: each track gets its own timeline, positioned by `media.timestamp` alone;
- `dtmf.track` says `inbound_track` where `media.track` says `inbound`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from callscribe.calls.media import MediaCall, MediaRefused, MediaRegistry

log = logging.getLogger(__name__)

NAMESPACE = "twilio"
SAMPLE_RATE = 8000
SAMPLES_PER_MS = SAMPLE_RATE // 1000
TRACKS = ("inbound", "outbound")

#: Largest text frame accepted. A real media message is about 400 bytes (160 bytes of mu-law in
#: base64 plus the envelope); a `start` with many custom parameters stays well under this.
MAX_MESSAGE_BYTES = 64 * 1024
#: A frame whose timestamp is within this of where its track stands is contiguous: Twilio's
#: presentation times jitter by a few ms, and a lost 20 ms frame must still show as a gap.
JITTER_MS = 10
#: A timestamp further ahead than this is not a lost frame but a broken counter; filling it with
#: silence would cost memory for nothing.
MAX_GAP_MS = 60_000
#: Parameters never copied into the call's metadata (they authenticate the stream).
SECRET_PARAMETERS = frozenset({"token"})

# WebSocket close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013

_MAX_UNKNOWN_LOGGED = 16
_MAX_INT = 2**53


class StreamError(Exception):
    """The stream cannot go on. `reason` is safe to log and to put in the close frame."""

    def __init__(self, reason: str, code: int = CLOSE_INVALID):
        super().__init__(reason)
        self.reason = reason
        self.code = code


# Messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    protocol: str | None
    version: str | None


@dataclass(frozen=True)
class Start:
    stream_sid: str | None
    call_sid: str | None
    account_sid: str | None
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]


@dataclass(frozen=True)
class Media:
    track: str | None
    chunk: int | None
    timestamp_ms: int | None
    payload: bytes


@dataclass(frozen=True)
class Dtmf:
    track: str | None
    digit: str


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Stop:
    call_sid: str | None
    account_sid: str | None


@dataclass(frozen=True)
class Unknown:
    event: str


Message = Union[Connected, Start, Media, Dtmf, Mark, Stop, Unknown]


def _obj(container: dict, key: str, *, required: bool = True) -> dict:
    value = container.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise StreamError(f"'{key}' must be an object")
    return value


def _str(container: dict, key: str, *, required: bool = False, where: str = "") -> str | None:
    value = container.get(key)
    if value is None:
        if required:
            raise StreamError(f"'{where}{key}' is missing")
        return None
    if not isinstance(value, str):
        raise StreamError(f"'{where}{key}' must be a string")
    return value


def _int(container: dict, key: str, *, where: str = "") -> int | None:
    """A non-negative integer sent as a JSON number or, as Twilio does, as a string of digits."""
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise StreamError(f"'{where}{key}' must be a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value) <= 16:
        number = int(value.strip())
    else:
        raise StreamError(f"'{where}{key}' must be a number, got {type(value).__name__}")
    if not 0 <= number < _MAX_INT:
        raise StreamError(f"'{where}{key}' is out of range")
    return number


def _track_name(value: str) -> str:
    # TwiML says inbound_track, the WebSocket says inbound: accept both spellings.
    return value[: -len("_track")] if value.endswith("_track") else value


def _check_media_format(fmt: dict) -> None:
    encoding = fmt.get("encoding")
    rate = _int(fmt, "sampleRate", where="start.mediaFormat.")
    channels = _int(fmt, "channels", where="start.mediaFormat.")
    if not isinstance(encoding, str) or encoding.lower() != "audio/x-mulaw" or rate != SAMPLE_RATE or channels != 1:
        raise StreamError(
            f"unsupported mediaFormat {encoding!r}/{rate}/{channels}; expected audio/x-mulaw/8000/1"
        )


def _parse_start(msg: dict) -> Start:
    start = _obj(msg, "start")
    _check_media_format(_obj(start, "mediaFormat"))
    raw_tracks = start.get("tracks")
    if raw_tracks is None:
        tracks: tuple[str, ...] = ("inbound",)
    elif isinstance(raw_tracks, list) and all(isinstance(t, str) for t in raw_tracks):
        tracks = tuple(dict.fromkeys(_track_name(t) for t in raw_tracks)) or ("inbound",)
    else:
        raise StreamError("'start.tracks' must be a list of strings")
    unknown = [t for t in tracks if t not in TRACKS]
    if unknown:
        raise StreamError(f"unknown track {unknown[0]!r} in start.tracks")
    params = _obj(start, "customParameters", required=False)
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in params.items()):
        raise StreamError("'start.customParameters' must map names to strings")
    return Start(
        stream_sid=_str(start, "streamSid", where="start.") or _str(msg, "streamSid"),
        call_sid=_str(start, "callSid", where="start."),
        account_sid=_str(start, "accountSid", where="start."),
        tracks=tracks,
        custom_parameters={k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
    )


def _parse_media(msg: dict) -> Media:
    media = _obj(msg, "media")
    payload = _str(media, "payload", required=True, where="media.")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise StreamError("'media.payload' is not valid base64") from None
    track = _str(media, "track", where="media.")
    return Media(
        track=_track_name(track) if track is not None else None,
        chunk=_int(media, "chunk", where="media."),
        timestamp_ms=_int(media, "timestamp", where="media."),
        payload=audio,
    )


def parse_message(data: str | bytes) -> Message:
    """One WebSocket frame -> one message. Raises `StreamError` for anything that is not a
    well-formed Twilio message; unknown event names parse as `Unknown`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise StreamError("binary frame; Twilio sends JSON text frames only", CLOSE_UNSUPPORTED)
    if len(data) > MAX_MESSAGE_BYTES:
        raise StreamError(f"message larger than {MAX_MESSAGE_BYTES} bytes", CLOSE_TOO_BIG)
    try:
        msg = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise StreamError("frame is not JSON") from None
    if not isinstance(msg, dict):
        raise StreamError("frame is not a JSON object")
    event = msg.get("event")
    if not isinstance(event, str):
        raise StreamError("'event' is missing or not a string")
    _int(msg, "sequenceNumber")  # validated for type only; ordering is TCP's job
    if event == "media":
        return _parse_media(msg)
    if event == "start":
        return _parse_start(msg)
    if event == "connected":
        return Connected(_str(msg, "protocol"), _str(msg, "version"))
    if event == "dtmf":
        dtmf = _obj(msg, "dtmf")
        track = _str(dtmf, "track", where="dtmf.")
        return Dtmf(_track_name(track) if track else None, _str(dtmf, "digit", required=True, where="dtmf.") or "")
    if event == "mark":
        return Mark(_str(_obj(msg, "mark"), "name", required=True, where="mark.") or "")
    if event == "stop":
        stop = _obj(msg, "stop", required=False)
        return Stop(_str(stop, "callSid", where="stop."), _str(stop, "accountSid", where="stop."))
    return Unknown(event[:64])


# Timelines -----------------------------------------------------------------------------------


@dataclass
class TrackTimeline:
    """Where one track stands, in samples since its media began (gap silence included)."""

    samples: int = 0

    def place(self, timestamp_ms: int | None, n: int) -> tuple[int, int | None]:
        """Position a frame of `n` samples stamped `timestamp_ms`.

        Returns (samples to drop from the frame's start, timestamp to give the registry). The
        timestamp is None when the frame simply continues the track, and set only when it starts
        after a gap, which the registry fills with silence. Frames that overlap what the track
        already has (a replayed or early-stamped frame) lose the overlapping part.
        """
        if timestamp_ms is None:
            self.samples += n
            return 0, None
        at = timestamp_ms * SAMPLES_PER_MS
        gap = at - self.samples
        if abs(gap) <= JITTER_MS * SAMPLES_PER_MS:
            self.samples += n
            return 0, None
        if gap > 0:
            if gap > MAX_GAP_MS * SAMPLES_PER_MS:
                raise StreamError(f"media.timestamp jumps {gap // SAMPLES_PER_MS} ms ahead", CLOSE_POLICY)
            self.samples = at + n
            return 0, timestamp_ms
        drop = min(n, -gap)
        self.samples += n - drop
        return drop, None


# The stream ----------------------------------------------------------------------------------

TenantResolver = Callable[[dict[str, str]], Awaitable[str | None]]


@dataclass
class StreamStats:
    media_frames: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    frames_dropped_overlap: int = 0
    unknown_events: int = 0


class TwilioStream:
    """One Twilio media stream, from its first frame to `stop` or close.

    `tenant` is the tenant the upgrade authenticated; when it is None the stream URL carried no
    token and `resolve_tenant` must find one in `start.customParameters` (Twilio documents that a
    Stream URL takes no query string and that parameters go in <Parameter> instead).
    """

    def __init__(
        self,
        registry: MediaRegistry,
        *,
        tenant: str | None,
        source: str,
        resolve_tenant: TenantResolver | None = None,
    ):
        # Imported here so that the protocol layer can be unit-tested with no codec module at hand.
        from callscribe.audio.codecs import ulaw_decode

        self._decode = ulaw_decode
        self._registry = registry
        self._tenant = tenant
        self._source = source
        self._resolve_tenant = resolve_tenant
        self.call: MediaCall | None = None
        self.start: Start | None = None
        self.stopped = False
        self.ended = False
        self.stats = StreamStats()
        self._timelines: dict[str, TrackTimeline] = {}
        self._unknown_seen: set[str] = set()
        self._connected_seen = False

    @property
    def started(self) -> bool:
        return self.start is not None

    @property
    def label(self) -> str:
        """How log lines name this stream."""
        if self.start is None:
            return f"from {self._source}"
        guid = self.call.guid if self.call is not None else self.start.call_sid
        return f"{self.start.stream_sid or '-'} (call {guid}, from {self._source})"

    async def receive(self, data: str | bytes) -> bool:
        """Handle one frame. Returns True once the stream has stopped; raises `StreamError` when
        it must be closed."""
        if self.stopped:
            return True  # Twilio closes the socket after stop; anything in between is moot
        msg = parse_message(data)
        if isinstance(msg, Media):
            await self._on_media(msg)
        elif isinstance(msg, Start):
            await self._on_start(msg)
        elif isinstance(msg, Connected):
            if self._connected_seen or self.started:
                log.debug("twilio stream %s: repeated 'connected' ignored", self.label)
            self._connected_seen = True
        elif isinstance(msg, Stop):
            self.stopped = True
            await self.end("stop")
            return True
        elif isinstance(msg, Dtmf):
            await self._require_call("dtmf").event("dtmf", {"digit": msg.digit, "track": msg.track or "inbound"})
        elif isinstance(msg, Mark):
            await self._require_call("mark").event("mark", {"name": msg.name})
        else:
            self.stats.unknown_events += 1
            if msg.event not in self._unknown_seen and len(self._unknown_seen) < _MAX_UNKNOWN_LOGGED:
                self._unknown_seen.add(msg.event)
                log.info("twilio stream %s: unknown event %r ignored", self.label, msg.event)
        return False

    def _require_call(self, what: str) -> MediaCall:
        if self.call is None:
            raise StreamError(f"'{what}' before 'start'", CLOSE_POLICY)
        return self.call

    async def _on_start(self, start: Start) -> None:
        if self.start is not None:
            raise StreamError("second 'start' on one stream", CLOSE_POLICY)
        self.start = start
        params = start.custom_parameters
        guid = params.get("guid") or start.call_sid
        if not guid:
            raise StreamError("'start.callSid' is missing and no 'guid' parameter was given")
        tenant = self._tenant
        if tenant is None:
            tenant = await self._resolve_tenant(params) if self._resolve_tenant is not None else None
            if tenant is None:
                raise StreamError("stream URL token missing, invalid or expired", CLOSE_POLICY)
        metadata = {
            "streamSid": start.stream_sid,
            "callSid": start.call_sid,
            "accountSid": start.account_sid,
            "tracks": list(start.tracks),
            "customParameters": {k: v for k, v in params.items() if k not in SECRET_PARAMETERS},
        }
        try:
            self.call = await self._registry.media_connected(
                tenant=tenant, namespace=NAMESPACE, guid=guid, tracks=list(start.tracks),
                source=self._source, metadata=metadata,
            )
        except MediaRefused as exc:
            raise StreamError(f"refused: {exc.reason}", CLOSE_TRY_LATER if exc.capacity else CLOSE_POLICY) from None
        self._timelines = {t: TrackTimeline() for t in start.tracks}
        log.info("twilio stream %s started, tenant %s, tracks %s", self.label, tenant, ",".join(start.tracks))

    async def _on_media(self, media: Media) -> None:
        call = self._require_call("media")
        assert self.start is not None
        track = media.track
        if track is None:
            if len(self.start.tracks) != 1:
                raise StreamError("'media.track' is missing on a two-track stream")
            track = self.start.tracks[0]
        timeline = self._timelines.get(track)
        if timeline is None:
            raise StreamError(f"media on track {track!r}, which 'start' did not announce", CLOSE_POLICY)
        self.stats.media_frames += 1
        n = len(media.payload)
        if n == 0:
            return
        drop, timestamp_ms = timeline.place(media.timestamp_ms, n)
        if drop >= n:
            self.stats.frames_dropped_overlap += 1
            return
        pcm = self._decode(media.payload[drop:] if drop else media.payload)
        self.stats.samples[track] = self.stats.samples.get(track, 0) + len(pcm)
        await call.audio(track, pcm, SAMPLE_RATE, timestamp_ms)

    async def end(self, reason: str) -> None:
        """End the call's media (stop, abrupt close, error). Idempotent, never raises."""
        if self.ended:
            return
        self.ended = True
        if self.call is None:
            return
        try:
            await self.call.end(reason)
        except Exception:  # the socket is going away whatever the registry thinks
            log.exception("twilio stream %s: ending the call failed", self.label)
        log.info("twilio stream %s ended: %s (%d media frames)", self.label, reason, self.stats.media_frames)

