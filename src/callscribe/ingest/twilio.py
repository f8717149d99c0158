"""Twilio Media Streams: message parsing, validation and the per-stream state machine.

This module knows the protocol and nothing about sockets: `parse_message` turns one text frame into
a typed message (or raises `AdapterError`), and `TwilioStream` drives one stream through
connected -> start -> media/dtmf/mark -> stop, handing the call registry timed PCM per track.
The WebSocket endpoint (`twilio_endpoint.py`) feeds it frames and closes the socket with the code
and reason of any `AdapterError`.

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

from callscribe.audio.rates import TELEPHONY_RATE
from callscribe.calls.media import MediaCall, MediaRefused, MediaRegistry, Participant, TrackSpec
from callscribe.ingest.base import (AdapterError, Close, TrackTimeline, WebSocketAdapter, integer, json_object, obj,
                                    string)

log = logging.getLogger(__name__)

NAMESPACE = "twilio"
SAMPLE_RATE = TELEPHONY_RATE
# Who each track carries unless the start says otherwise: inbound is the caller.
TRACKS = {"inbound": Participant("customer", "customer"), "outbound": Participant("agent", "agent")}

#: Largest text frame accepted. A real media message is about 400 bytes (160 bytes of mu-law in
#: base64 plus the envelope); a `start` with many custom parameters stays well under this.
MAX_MESSAGE_BYTES = 64 * 1024
#: A frame whose timestamp is within this of where its track stands is contiguous: Twilio's
#: presentation times jitter by a few ms, and a lost 20 ms frame must still show as a gap.
JITTER_MS = 10
#: A timestamp further ahead than this is not a lost frame but a broken counter.
MAX_GAP_MS = 60_000
#: Parameters never copied into the call's metadata (they authenticate the stream).
SECRET_PARAMETERS = frozenset({"token"})

_MAX_UNKNOWN_LOGGED = 16


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


def _track_name(value: str) -> str:
    # TwiML says inbound_track, the WebSocket says inbound: accept both spellings.
    return value[: -len("_track")] if value.endswith("_track") else value


def _check_media_format(fmt: dict) -> None:
    encoding = fmt.get("encoding")
    rate = integer(fmt, "sampleRate", where="start.mediaFormat.")
    channels = integer(fmt, "channels", where="start.mediaFormat.")
    if not isinstance(encoding, str) or encoding.lower() != "audio/x-mulaw" or rate != SAMPLE_RATE or channels != 1:
        raise AdapterError(
            f"unsupported mediaFormat {encoding!r}/{rate}/{channels}; expected audio/x-mulaw/8000/1"
        )


def _parse_start(msg: dict) -> Start:
    start = obj(msg, "start")
    _check_media_format(obj(start, "mediaFormat"))
    raw_tracks = start.get("tracks")
    if raw_tracks is None:
        tracks: tuple[str, ...] = ("inbound",)
    elif isinstance(raw_tracks, list) and all(isinstance(t, str) for t in raw_tracks):
        tracks = tuple(dict.fromkeys(_track_name(t) for t in raw_tracks)) or ("inbound",)
    else:
        raise AdapterError("'start.tracks' must be a list of strings")
    unknown = [t for t in tracks if t not in TRACKS]
    if unknown:
        raise AdapterError(f"unknown track {unknown[0]!r} in start.tracks")
    params = obj(start, "customParameters", required=False)
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in params.items()):
        raise AdapterError("'start.customParameters' must map names to strings")
    return Start(
        stream_sid=string(start, "streamSid", where="start.") or string(msg, "streamSid"),
        call_sid=string(start, "callSid", where="start."),
        account_sid=string(start, "accountSid", where="start."),
        tracks=tracks,
        custom_parameters={k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
    )


def _parse_media(msg: dict) -> Media:
    media = obj(msg, "media")
    payload = string(media, "payload", required=True, where="media.") or ""
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise AdapterError("'media.payload' is not valid base64") from None
    track = string(media, "track", where="media.")
    return Media(
        track=_track_name(track) if track is not None else None,
        chunk=integer(media, "chunk", where="media."),
        timestamp_ms=integer(media, "timestamp", where="media."),
        payload=audio,
    )


def parse_message(data: str | bytes) -> Message:
    """One WebSocket frame -> one message. Raises `AdapterError` for anything that is not a
    well-formed Twilio message; unknown event names parse as `Unknown`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise AdapterError("binary frame; Twilio sends JSON text frames only", Close.UNSUPPORTED)
    if len(data) > MAX_MESSAGE_BYTES:
        raise AdapterError(f"message larger than {MAX_MESSAGE_BYTES} bytes", Close.TOO_BIG)
    msg = json_object(data, what="frame")
    event = msg.get("event")
    if not isinstance(event, str):
        raise AdapterError("'event' is missing or not a string")
    integer(msg, "sequenceNumber")  # validated for type only; ordering is TCP's job
    if event == "media":
        return _parse_media(msg)
    if event == "start":
        return _parse_start(msg)
    if event == "connected":
        return Connected(string(msg, "protocol"), string(msg, "version"))
    if event == "dtmf":
        dtmf = obj(msg, "dtmf")
        track = string(dtmf, "track", where="dtmf.")
        return Dtmf(_track_name(track) if track else None, string(dtmf, "digit", required=True, where="dtmf.") or "")
    if event == "mark":
        return Mark(string(obj(msg, "mark"), "name", required=True, where="mark.") or "")
    if event == "stop":
        stop = obj(msg, "stop", required=False)
        return Stop(string(stop, "callSid", where="stop."), string(stop, "accountSid", where="stop."))
    return Unknown(event[:64])


def track_specs(tracks: tuple[str, ...] | list[str]) -> list[TrackSpec]:
    """Twilio's tracks with the participant each carries unless a start names them otherwise."""
    return [TrackSpec(t, TRACKS[t]) for t in tracks]


# The stream ----------------------------------------------------------------------------------

TenantResolver = Callable[[dict[str, str]], Awaitable[str | None]]


@dataclass
class StreamStats:
    media_frames: int = 0
    samples: dict[str, int] = field(default_factory=dict)
    frames_dropped_overlap: int = 0
    unknown_events: int = 0


class TwilioStream(WebSocketAdapter):
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
        bind: Callable[[str], Awaitable[bool]] | None = None,
    ):
        from callscribe.audio.codecs import ulaw_decode

        self._decode = ulaw_decode
        self._registry = registry
        self._tenant = tenant
        self._source = source
        self._resolve_tenant = resolve_tenant
        self._bind = bind
        self.call: MediaCall | None = None
        self.start: Start | None = None
        self.stopped = False
        self.ended = False
        self.stats = StreamStats()
        self._timelines: dict[str, TrackTimeline] = {}
        self._unknown_seen: set[str] = set()
        self._connected_seen = False

    name = "twilio stream"
    log = log
    max_message_bytes = MAX_MESSAGE_BYTES
    close_code = Close.NORMAL
    close_reason = "stream stopped"

    async def on_text(self, text: str) -> bool:
        return await self.receive(text)

    async def on_bytes(self, data: bytes) -> bool:
        return await self.receive(data)

    @property
    def label(self) -> str:
        """How log lines name this stream."""
        if self.start is None:
            return f"from {self._source}"
        guid = self.call.guid if self.call is not None else self.start.call_sid
        return f"{self.start.stream_sid or '-'} (call {guid}, from {self._source})"

    async def receive(self, data: str | bytes) -> bool:
        """Handle one frame. Returns True once the stream has stopped; raises `AdapterError` when
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
            raise AdapterError(f"'{what}' before 'start'", Close.POLICY)
        return self.call

    async def _on_start(self, start: Start) -> None:
        if self.start is not None:
            raise AdapterError("second 'start' on one stream", Close.POLICY)
        self.start = start
        params = start.custom_parameters
        guid = params.get("guid") or start.call_sid
        if not guid:
            raise AdapterError("'start.callSid' is missing and no 'guid' parameter was given")
        tenant = self._tenant
        if tenant is None:
            tenant = await self._resolve_tenant(params) if self._resolve_tenant is not None else None
            if tenant is None:
                raise AdapterError("stream URL token missing, invalid or expired", Close.POLICY)
        if self._bind is not None and not await self._bind(guid):
            raise AdapterError("stream token already used for another call", Close.POLICY)
        metadata = {
            "streamSid": start.stream_sid,
            "callSid": start.call_sid,
            "accountSid": start.account_sid,
            "tracks": list(start.tracks),
            "customParameters": {k: v for k, v in params.items() if k not in SECRET_PARAMETERS},
        }
        try:
            self.call = await self._registry.media_connected(
                tenant=tenant, namespace=NAMESPACE, guid=guid, tracks=track_specs(start.tracks),
                source=self._source, metadata=metadata,
            )
        except MediaRefused as exc:
            raise AdapterError(f"refused: {exc.reason}", Close.TRY_LATER if exc.capacity else Close.POLICY) from None
        self._timelines = {t: TrackTimeline(SAMPLE_RATE, JITTER_MS, MAX_GAP_MS) for t in start.tracks}
        self.started = True
        log.info("twilio stream %s started, tenant %s, tracks %s", self.label, tenant, ",".join(start.tracks))

    async def _on_media(self, media: Media) -> None:
        call = self._require_call("media")
        assert self.start is not None
        track = media.track
        if track is None:
            if len(self.start.tracks) != 1:
                raise AdapterError("'media.track' is missing on a two-track stream")
            track = self.start.tracks[0]
        timeline = self._timelines.get(track)
        if timeline is None:
            raise AdapterError(f"media on track {track!r}, which 'start' did not announce", Close.POLICY)
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

