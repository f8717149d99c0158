"""What the call registry publishes, and the in-process bus that carries it.

The registry is the only publisher. Everything downstream (the SQL store, the webhook outbox, the
WebSocket fan-out, protocol back-channels such as the ASAPP direct WebSocket) subscribes. Text in
these events is already redacted as the stream's `redactionOutput` asks: nothing unredacted leaves
the registry unless the stream asked for it, and then only in `unredacted_text`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Union

from callscribe.asr.types import Word

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class CallRef:
    """Identity of a call. `call_id` is ours (unique across tenants); `guid` is the caller's."""

    call_id: str
    tenant: str
    namespace: str
    guid: str


@dataclass(frozen=True)
class UtteranceEvent:
    """A partial or final transcript of one utterance of one leg.

    `seq` is the per-call sequence number shared by every event of the call (utterances and state
    changes), starting at 1, with no gaps. `text` is what the stream's redactionOutput allows to be
    shown (redacted unless the mode is "unredacted"); `unredacted_text` is set only in
    "redacted_and_unredacted" mode. `words` are set only when the stream asked for detailedToken
    (masked like `text` in a redacting mode; ASAPP's surfaces refuse that combination).
    A partial with empty text withdraws the partials shown for that utterance: it turned out to be
    noise, and no final follows. `participant` is the id of the speaker within the call (for ASAPP
    calls the same as `role`); `surface` names the control surface whose formats deliver it.
    """

    call: CallRef
    seq: int
    kind: Literal["partial", "final"]
    role: str  # the participant's role label: customer, agent, attendee, speaker
    external_id: str  # the caller's id of the speaker (ASAPP customerId / agentId)
    stream_id: str  # the per-leg stream id of the streaming interval that produced it
    utterance: int  # per-leg utterance number
    start_ms: int  # ms from the start of the leg's media
    end_ms: int
    text: str
    unredacted_text: str | None = None
    words: tuple[Word, ...] | None = None
    redaction_output: str = "redacted"
    created_at: datetime = field(default_factory=utcnow)
    participant: str = ""  # defaults to the role (calls whose participants are their roles)
    participant_name: str = ""
    surface: str = "asapp"

    def __post_init__(self) -> None:
        if not self.participant:
            object.__setattr__(self, "participant", self.role)


@dataclass(frozen=True)
class StreamSummary:
    """Counters for one leg over one streaming interval (start-streaming to stop-streaming)."""

    total_audio_bytes: int  # counted as 16-bit 8 kHz audio, whatever the codec
    audio_duration_ms: int
    streaming_seconds: int
    transcripts: int

    def as_dict(self) -> dict[str, int]:
        return {"total_audio_bytes": self.total_audio_bytes, "audio_duration_ms": self.audio_duration_ms,
                "streaming_seconds": self.streaming_seconds, "transcripts": self.transcripts}

    def as_camel(self) -> dict[str, int]:
        """The form ASAPP's summaries take, which callscribe's own API shows too."""
        return {"totalAudioBytes": self.total_audio_bytes, "audioDurationMs": self.audio_duration_ms,
                "streamingSeconds": self.streaming_seconds, "transcripts": self.transcripts}


@dataclass(frozen=True)
class CallStateEvent:
    """A change in a call's life. `state` is one of:

    media-connected, streaming-started, streaming-stopped, media-ended, media-interrupted (closed
    after its node or process was lost), recording-saved.
    `data` carries what the state needs: for streaming-started the legs' stream ids and params; for
    streaming-stopped the per-role StreamSummary objects (as dicts); for recording-saved the role,
    stream id and file path relative to the data dir.

    The registry's shapes (snake_case keys; legs are keyed by participant id):
    media-connected {"tracks": [...], "participants": {track: participant id}, "source", "metadata"};
    streaming-started {"legs": {participant: {"participant", "role", "name", "external_id",
    "stream_id", "track"}}, "params": {"language", "detailed_token", "audio_recording_allowed",
    "redaction_output", "surface", and the surface's own options}}; streaming-stopped {"reason":
    "stop" | "media-ended", "stream_ids": {participant: id}, "summaries": {participant:
    {StreamSummary fields, "stream_id", "role"}}}; media-ended {"reason"}; recording-saved
    {"participant", "role", "stream_id", "path", "duration_ms", "sample_rate"}.
    """

    call: CallRef
    seq: int
    state: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    surface: str = ""  # the control surface of the call's latest interval ("" before any start)


@dataclass(frozen=True)
class SettledEvent:
    """One leg's transcript is complete up to `until_ms` (leg time, as the finals' times): no final of
    it will start before. Published after every final that precedes it, about once a second while
    the leg hears silence, on the bus's progress channel only (nothing stores it): surfaces that cut
    the timeline into fixed segments close them through a silence with it."""

    call: CallRef
    participant: str
    until_ms: int
    surface: str = ""
    created_at: datetime = field(default_factory=utcnow)


CallEvent = Union[UtteranceEvent, CallStateEvent]
END_STATES = ("media-ended", "media-interrupted")  # a call's last event has one of these states


def is_end(event: object) -> bool:
    """Whether this is a call's last event: nothing follows it."""
    return isinstance(event, CallStateEvent) and event.state in END_STATES

AnyEvent = Union[UtteranceEvent, CallStateEvent, SettledEvent]  # what webhook formatters are given
Subscriber = Callable[[CallEvent], None]


class EventBus:
    """In-process fan-out of call events, in publish order, on the event loop.

    Subscribers are plain callables run synchronously on publish: they must be quick (put the event
    on their own queue and return). A subscriber that raises is logged and does not stop the others.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._progress: list[Callable[[SettledEvent], None]] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def subscribe_progress(self, fn: Callable[[SettledEvent], None]) -> Callable[[], None]:
        """Settled marks, in order with the events (a subscriber of both sees them interleaved)."""
        self._progress.append(fn)
        return lambda: self._progress.remove(fn) if fn in self._progress else None

    def publish_progress(self, event: SettledEvent) -> None:
        for fn in list(self._progress):
            try:
                fn(event)
            except Exception:
                log.exception("progress subscriber %r failed", fn)

    def publish(self, event: CallEvent) -> None:
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber %r failed", fn)

    def queue(self, maxsize: int = 0) -> tuple[asyncio.Queue[CallEvent], Callable[[], None]]:
        """A queue that receives every event from now on, and the function that unsubscribes it."""
        q: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize)

        def put(event: CallEvent) -> None:
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event queue full; dropping %s seq %s", type(event).__name__, event.seq)

        return q, self.subscribe(put)
