"""Tracks (media as it arrives) and legs (one participant's streaming interval) of a call.

A Track is one protocol track (Twilio "inbound", a SIPREC m-line, an attendee's audio, ...) and its
timeline: every sample that arrives is counted and moves the timeline on, whether transcription is
on or not. A Leg is one participant's streaming interval, from a start to a stop: its own stream id,
its own LegPipeline, counters for the interval summary and, when allowed, a recorder.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

from callscribe.calls.events import StreamSummary
from callscribe.calls.media import Participant
from callscribe.calls.recording import LegRecorder

if TYPE_CHECKING:
    from callscribe.asr.pipeline import LegPipeline
    from callscribe.calls.call import MediaSession

BYTES_PER_MS = 16  # summaries count audio as 16-bit 8 kHz PCM, whatever the codec


@dataclass(frozen=True)
class StreamParams:
    """What a start asked for, in the registry's terms.

    `surface` names the control surface that started the interval; its webhook formatter delivers
    the interval's events. `participants` (track name -> participant) overrides who the adapter says
    a track carries; `external_ids` (role -> id) fills in the caller's id of a participant the adapter
    named. `options` are the surface's own parameters, kept with the interval as they were given.
    `redaction_policy` says what a redacting mode redacts (the listen API's `redact=`), and
    `endpoint_silence_ms` how much silence ends an utterance (its `endpointing=`).
    """

    language: str = "en-US"
    detailed_token: bool = False
    audio_recording_allowed: bool = False
    redaction_output: str = "redacted"
    smart_formatting: bool = True
    partials: bool = True
    surface: str = "asapp"
    participants: Mapping[str, Participant] = field(default_factory=dict)
    external_ids: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    redaction_policy: Any = None  # a callscribe.redact.RedactionPolicy; None: ASAPP's default
    endpoint_silence_ms: int | None = None  # silence that ends an utterance; None: the server's setting

    def participant_of(self, track: "Track") -> Participant:
        """Who a track carries in this interval."""
        p = self.participants.get(track.name) or track.participant or Participant(track.name, track.name)
        if not p.external_id and p.role in self.external_ids:
            p = replace(p, external_id=self.external_ids[p.role])
        return p

    def as_dict(self) -> dict[str, Any]:
        return {
            "language": self.language, "detailed_token": self.detailed_token,
            "audio_recording_allowed": self.audio_recording_allowed, "redaction_output": self.redaction_output,
            "surface": self.surface, **{k: v for k, v in self.options.items()},
        }


class Track:
    """One protocol track of a call and its timeline (ms since the call's media first began)."""

    def __init__(self, name: str, participant: Participant | None = None):
        self.name = name
        self.participant = participant  # as the adapter named it, if it did
        self.position_ms = Fraction(0)  # where the next sample goes
        self.received_ms = Fraction(0)  # everything received, on or off
        self.session: MediaSession | None = None  # the live session feeding it, if any
        self.base_ms = Fraction(0)  # timeline position when the live session began
        self.leg: Leg | None = None  # the open leg this track feeds, if transcription is on
        self.next_utterance = 0  # utterance numbers continue across intervals

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "live": self.session is not None, "position_ms": int(self.position_ms),
                "received_ms": int(self.received_ms),
                "participant": self.participant.id if self.participant else None}


class ParticipantNames:
    """The names surfaces read off a leg, wherever it runs (here, or on another node)."""

    participant: Participant

    @property
    def id(self) -> str:
        return self.participant.id

    @property
    def role(self) -> str:
        return self.participant.role

    @property
    def external_id(self) -> str:
        return self.participant.external_id


class Leg(ParticipantNames):
    """One participant over one streaming interval."""

    def __init__(self, participant: Participant, params: StreamParams):
        self.participant = participant
        self.params = params
        self.stream_id = str(uuid.uuid4())
        self.track: Track | None = None
        self.pipeline: LegPipeline | None = None
        self.recorder: LegRecorder | None = None
        self.utterance_base = 0
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._stopped_mono: float | None = None
        self.audio_ms = Fraction(0)
        self.transcripts = 0
        self.partial_shown: int | None = None  # utterance whose partial subscribers may still show
        self.accepting = True  # audio goes to the pipeline only while True
        self.closed = False  # set once its last final is published; later engine events are dropped

    @property
    def active(self) -> bool:
        return self._stopped_mono is None

    def stop_clock(self) -> None:
        if self._stopped_mono is None:
            self._stopped_mono = time.monotonic()
        self.accepting = False

    def summary(self) -> StreamSummary:
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        ms = int(self.audio_ms)
        return StreamSummary(total_audio_bytes=BYTES_PER_MS * ms, audio_duration_ms=ms,
                             streaming_seconds=max(0, math.ceil(end - self._started_mono - 1e-9)),
                             transcripts=self.transcripts)

    def describe(self) -> dict[str, Any]:
        """The leg as state events and views carry it."""
        return {"participant": self.id, "role": self.role, "name": self.participant.name,
                "external_id": self.external_id, "stream_id": self.stream_id,
                "track": self.track.name if self.track else None}

    def snapshot(self) -> dict[str, Any]:
        return {**self.describe(), "streaming": self.active, "language": self.params.language,
                "redaction_output": self.params.redaction_output, "summary": self.summary().as_dict()}
