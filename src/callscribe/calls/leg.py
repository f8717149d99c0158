"""Tracks (media as it arrives) and legs (one speaker's streaming interval) of a call.

A Track is one protocol track (Twilio "inbound", SIPREC m-line "0", ...) and its timeline: every
sample that arrives is counted and moves the timeline on, whether transcription is on or not. A Leg
is one role's streaming interval, from start-streaming to stop-streaming: its own stream id, its own
LegPipeline, counters for the interval summary and, when allowed, a recorder.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from callscribe.calls.events import StreamSummary
from callscribe.calls.recording import LegRecorder
from callscribe.calls.roles import RoleParams

BYTES_PER_MS = 16  # summaries count audio as 16-bit 8 kHz PCM, whatever the codec


@dataclass(frozen=True)
class StreamParams:
    """What a start asked for (ASAPP autotranscribeParams plus the role-mapping parameters)."""

    language: str = "en-US"
    detailed_token: bool = False
    audio_recording_allowed: bool = False
    redaction_output: str = "redacted"
    smart_formatting: bool = True
    external_ids: dict[str, str] = field(default_factory=dict)  # role -> customerId / agentId
    roles: RoleParams = field(default_factory=RoleParams)
    amazon_connect: dict[str, Any] | None = None  # streamArn, startSelectorType, afterFragmentNumber
    partials: bool = True

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "language": self.language, "detailed_token": self.detailed_token,
            "audio_recording_allowed": self.audio_recording_allowed, "redaction_output": self.redaction_output,
            "external_ids": dict(self.external_ids),
            "twilio_track_map": dict(self.roles.twilio_track_map), "media_line_order": self.roles.media_line_order,
        }
        if self.amazon_connect is not None:
            out["amazon_connect"] = dict(self.amazon_connect)
        return out


class Track:
    """One protocol track of a call and its timeline (ms since the call's media first began)."""

    def __init__(self, name: str):
        self.name = name
        self.position_ms = Fraction(0)  # where the next sample goes
        self.received_ms = Fraction(0)  # everything received, on or off
        self.session: Any = None  # the live MediaSession feeding it, if any
        self.base_ms = Fraction(0)  # timeline position when the live session began
        self.leg: Leg | None = None  # the open leg this track feeds, if transcription is on
        self.next_utterance = 0  # utterance numbers continue across intervals

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "live": self.session is not None, "position_ms": int(self.position_ms),
                "received_ms": int(self.received_ms)}


class Leg:
    """One role over one streaming interval."""

    def __init__(self, role: str, external_id: str, params: StreamParams):
        self.role = role
        self.external_id = external_id
        self.params = params
        self.stream_id = str(uuid.uuid4())
        self.track: Track | None = None
        self.pipeline: Any = None  # LegPipeline
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

    def snapshot(self) -> dict[str, Any]:
        s = self.summary()
        return {"role": self.role, "stream_id": self.stream_id, "external_id": self.external_id,
                "track": self.track.name if self.track else None, "streaming": self.active,
                "language": self.params.language, "redaction_output": self.params.redaction_output,
                "summary": summary_dict(s)}


def summary_dict(s: StreamSummary) -> dict[str, int]:
    """The ASAPP wire form of a summary."""
    return {"totalAudioBytes": s.total_audio_bytes, "audioDurationMs": s.audio_duration_ms,
            "streamingSeconds": s.streaming_seconds, "transcripts": s.transcripts}
