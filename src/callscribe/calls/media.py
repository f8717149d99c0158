"""The contract between the edge (media adapters, pulled sources) and the call registry.

An adapter turns its protocol into exactly this: who the call is (tenant, namespace, guid), which
tracks it carries (in the protocol's own names: Twilio "inbound"/"outbound", AudioHook
"external"/"internal", SIPREC m-line labels, a meeting's attendee ids, ...) and, as far as the
protocol knows, the participant each track carries; then timed PCM per track and the end of the
media. A control surface may name the participants differently for one call (ASAPP's
`twilioParams.trackMap`, say): its start carries `StreamParams.participants`, which wins. Adapters
never know whether transcription is on.

A source that callscribe pulls (Kinesis Video Streams, a stream URL) is a `PulledSource`: the control
surface that starts the call hands it to the registry, which starts it and stops it with the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, TypeGuard

import numpy as np


# What the store's columns hold; the registry refuses identities that do not fit, so every surface's
# validators and the database agree (a call whose row cannot be written would lose its transcripts).
MAX_GUID = 255
MAX_PARTICIPANT_ID = 128
MAX_ROLE = 64
MAX_EXTERNAL_ID = 255


def valid_id(value: object, max_len: int) -> TypeGuard[str]:
    """A non-empty string of at most `max_len` printable characters (no NUL or control characters)."""
    return isinstance(value, str) and 0 < len(value) <= max_len and value.isprintable()


def identity_problem(guid: str, participants: "list[Participant]") -> str | None:
    """Why these identities cannot be kept, or None."""
    if not valid_id(guid, MAX_GUID):
        return f"call id must be 1 to {MAX_GUID} printable characters"
    for p in participants:
        if not valid_id(p.id, MAX_PARTICIPANT_ID) or not valid_id(p.role, MAX_ROLE):
            return f"participant ids must be 1 to {MAX_PARTICIPANT_ID} printable characters"
        if p.external_id and not valid_id(p.external_id, MAX_EXTERNAL_ID):
            return f"external ids must be at most {MAX_EXTERNAL_ID} printable characters"
    return None


@dataclass(frozen=True)
class Participant:
    """Who one track carries. `id` is unique within the call and keys its legs, webhook ordering,
    redaction context and summaries; `role` is the label surfaces speak (customer, agent,
    attendee, speaker); `name` is for display; `external_id` is the caller's id for the speaker
    (ASAPP's customerId/agentId, a Chime ExternalUserId)."""

    id: str
    role: str
    name: str = ""
    external_id: str = ""


@dataclass(frozen=True)
class TrackSpec:
    """One track a media session carries, and the participant the protocol says it carries."""

    name: str
    participant: Participant | None = None


@dataclass(frozen=True)
class MediaGrant:
    """What a join token resolves to: who may send one participant's audio into which call.
    A control surface that hands out such tokens (a meeting's JoinToken) registers a resolver
    in `MediaGrants`; transports that carry a participant's audio (WebRTC, a PCM socket) ask it."""

    tenant: str
    namespace: str
    guid: str
    participant: Participant
    source: str = ""  # names the surface, for logs and the call's metadata


GrantResolver = Callable[[str], Awaitable["MediaGrant | None"]]


class MediaGrants:
    """The resolvers of every surface that issues join tokens; a token none of them knows is refused."""

    def __init__(self) -> None:
        self._resolvers: list[GrantResolver] = []

    def register(self, resolver: GrantResolver) -> None:
        self._resolvers.append(resolver)

    async def resolve(self, token: str) -> MediaGrant | None:
        for resolver in self._resolvers:
            grant = await resolver(token)
            if grant is not None:
                return grant
        return None


def track_specs(tracks: Sequence[str | TrackSpec]) -> list[TrackSpec]:
    """Plain track names are tracks whose participant is named after the track."""
    return [t if isinstance(t, TrackSpec) else TrackSpec(t) for t in tracks]


class MediaCall(Protocol):
    """One connected media session of a call, as handed to an adapter by the registry."""

    @property
    def guid(self) -> str: ...

    async def audio(self, track: str, pcm: np.ndarray, sample_rate: int, timestamp_ms: int | None = None) -> None:
        """Deliver mono int16 samples of one track.

        `timestamp_ms` places the first sample on that track's timeline (ms since this session's
        media began); when it is ahead of where the track stands, the track's timeline skips the
        gap (no audio is made up for it). None means "right after the previous frame". Audio is
        counted whether or not transcription is on; it is transcribed, buffered or recorded only
        while it is on.
        """
        ...

    async def event(self, name: str, data: dict[str, Any]) -> None:
        """A protocol event worth keeping with the call (DTMF digit, mark, pause, resume)."""
        ...

    async def end(self, reason: str) -> None:
        """The media ended (protocol stop, hang-up, abrupt close, error). Idempotent."""
        ...


class MediaRegistry(Protocol):
    """What the registry offers to adapters."""

    async def media_connected(
        self, *, tenant: str, namespace: str, guid: str, tracks: Sequence[str | TrackSpec], source: str,
        metadata: dict[str, Any] | None = None,
    ) -> MediaCall:
        """Register (or rejoin) the call's media and return the handle to feed it.

        Raises `MediaRefused` when the call cannot be taken (no capacity, duplicate live media, ...).
        """
        ...


class PulledSource(Protocol):
    """Media that callscribe fetches itself (a Kinesis Video stream, a stream URL).

    `start` connects the media through `registry.media_connected` under the given call key and
    returns once it is connected (raising `MediaRefused` with a reason the caller can show when it
    cannot be), then keeps feeding in the background until the source ends, when it ends the media.
    `stop` ends the pull; it is called when the call is discarded or the server shuts down, and
    must be idempotent.
    """

    async def start(self, registry: MediaRegistry, *, tenant: str, namespace: str, guid: str) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class SourceEnd:
    """How a pulled source ended, for the control surface that started it to tell its client. It
    travels as the media's end reason (`reason()` / `SourceEnd.parse`)."""

    status: str  # ended | unreachable | undecodable | stopped | shutdown | error
    message: str

    def reason(self) -> str:
        return f"source:{self.status}:{self.message}"

    @staticmethod
    def parse(reason: str) -> "SourceEnd | None":
        """The SourceEnd a media-ended reason carries, or None for an end no source chose."""
        kind, _, rest = reason.partition(":")
        if kind != "source":
            return None
        status, _, message = rest.partition(":")
        return SourceEnd(status, message)


class SteeredSource(PulledSource, Protocol):
    """A pulled source its control surface steers: `release()` once transcription is on, `finish(end)`
    to end it with the surface's own status; `end` once it ended, `fed_ms` of media fed so far."""

    end: SourceEnd | None
    fed_ms: float

    def release(self) -> None: ...

    async def finish(self, end: SourceEnd) -> None: ...


class UrlSources(Protocol):
    """Makes the pull of a stream URL (registered by the app; control surfaces never import adapters)."""

    schemes: tuple[str, ...]

    def __call__(self, url: str, *, per_channel: bool, inactivity_timeout_s: float) -> SteeredSource: ...


class MediaRefused(Exception):
    """The media cannot be taken; `reason` is safe to log and to show the peer. A pulled source says
    what kind of failure it was, for the control surface's answer: "unusable" (the source as given
    cannot be read: a parameter is wrong, retrying will not help), "no-media" (nothing arrived in
    time) or "failed" (the rest, which a retry may cure)."""

    def __init__(self, reason: str, *, capacity: bool = False, kind: str = "failed"):
        super().__init__(reason)
        self.reason = reason
        self.capacity = capacity
        self.kind = kind


#: Builds the pulled source a control surface's start names, from the surface's own parameters
#: (ASAPP's amazonConnectParams, say); raises ValueError with a message for parameters it cannot use.
#: The composition root registers one per namespace, so control surfaces never import adapters.
SourceFactory = Callable[[Mapping[str, Any]], PulledSource]

#: The protocol event a pulled source records when its source ended the media with an error.
SOURCE_ERROR_EVENT = "source-error"
