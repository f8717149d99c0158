"""The contract between media adapters (ingest/*) and the call registry.

An adapter turns its protocol into exactly this: who the call is (tenant, namespace, guid), which
tracks it carries (in the protocol's own names: Twilio "inbound"/"outbound", AudioHook
"external"/"internal", SIPREC m-line "0"/"1", ...), timed PCM per track, and the end of the media.
The registry maps tracks to roles (customer/agent) using the namespace's defaults and whatever
start-streaming said (twilioParams.trackMap, siprecParams.mediaLineOrder, ...); adapters never decide
roles and never know whether transcription is on.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class MediaCall(Protocol):
    """One connected media session of a call, as handed to an adapter by the registry."""

    @property
    def guid(self) -> str: ...

    async def audio(self, track: str, pcm: np.ndarray, sample_rate: int, timestamp_ms: int | None = None) -> None:
        """Deliver mono int16 samples of one track.

        `timestamp_ms` places the first sample on that track's timeline (ms since the media began);
        when it is ahead of what the track has received, the gap is silence. None means "right after
        the previous frame". Audio is counted whether or not transcription is on; it is transcribed,
        buffered or recorded only while it is on.
        """
        ...

    async def event(self, name: str, data: dict) -> None:
        """A protocol event worth keeping with the call (DTMF digit, mark, pause, resume)."""
        ...

    async def end(self, reason: str) -> None:
        """The media ended (protocol stop, hang-up, abrupt close, error). Idempotent."""
        ...


class MediaRegistry(Protocol):
    """What the registry offers to adapters."""

    async def media_connected(
        self, *, tenant: str, namespace: str, guid: str, tracks: Sequence[str], source: str,
        metadata: dict | None = None,
    ) -> MediaCall:
        """Register (or rejoin) the call's media and return the handle to feed it.

        Raises `MediaRefused` when the call cannot be taken (no capacity, duplicate live media, ...).
        """
        ...


class MediaRefused(Exception):
    """The registry will not take this media; `reason` is safe to log and to show the peer."""

    def __init__(self, reason: str, *, capacity: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.capacity = capacity
