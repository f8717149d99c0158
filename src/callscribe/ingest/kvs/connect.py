"""The layout of Amazon Connect's Kinesis Video fragments (media-protocols.md §4.3).

Each fragment is a little Matroska file: tracks named AUDIO_FROM_CUSTOMER / AUDIO_TO_CUSTOMER
(numbers vary, so tracks are mapped by name; the legacy single track "Track_audio/L16" is the
customer), raw 16-bit little-endian 8 kHz PCM whatever the CodecID says (Connect writes A_AAC), the
AWS_KINESISVIDEO_* tags GetMedia adds before the Cluster and Connect's own tags (ContactId first)
in Tags elements after it. `FragmentAssembler` turns reader items into fragments: `ready` once a
fragment's audio is complete and its ContactId known (so audio of the next contact on a reused
stream is never delivered before its ContactId is checked), `done` when the fragment ends, with
the tags that follow its audio (continuation token, lag, error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from callscribe.calls.media import Participant, TrackSpec
from callscribe.ingest.kvs.ebml import Block, FragmentStart, Item, Tag, Track

CUSTOMER_TRACK = "AUDIO_FROM_CUSTOMER"
AGENT_TRACK = "AUDIO_TO_CUSTOMER"
LEGACY_TRACK = "Track_audio/L16"  # older streams: one track, the customer
SAMPLE_RATE = 8000
PARTICIPANTS = {CUSTOMER_TRACK: Participant("customer", "customer"), AGENT_TRACK: Participant("agent", "agent")}

FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
CONTINUATION_TOKEN = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
MILLIS_BEHIND_NOW = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
ERROR_CODE = "AWS_KINESISVIDEO_ERROR_CODE"
ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"
CONTACT_ID = "ContactId"


def track_name(name: str) -> str | None:
    """The Connect track a TrackEntry Name is, None for a track Connect does not write."""
    if name == LEGACY_TRACK:
        return CUSTOMER_TRACK
    return name if name in PARTICIPANTS else None


def track_specs(names: list[str]) -> list[TrackSpec]:
    return [TrackSpec(n, PARTICIPANTS[n]) for n in names]


def pcm(payload: bytes) -> np.ndarray:
    """A block's samples: s16le, an odd trailing byte dropped."""
    return np.frombuffer(payload[:len(payload) & ~1], dtype="<i2").astype(np.int16)


@dataclass
class Fragment:
    tags: dict[str, str] = field(default_factory=dict)
    tracks: dict[int, str] = field(default_factory=dict)  # track number -> Connect track name
    blocks: list[tuple[str, int, bytes]] = field(default_factory=list)  # (track, absolute ms, payload)
    ready: bool = False

    @property
    def number(self) -> str | None:
        return self.tags.get(FRAGMENT_NUMBER)

    @property
    def contact_id(self) -> str | None:
        return self.tags.get(CONTACT_ID)

    @property
    def error(self) -> str | None:
        """"<code> <id>" of a GetMedia error tag, None without one."""
        if ERROR_CODE in self.tags or ERROR_ID in self.tags:
            return f"{self.tags.get(ERROR_CODE, '?')} {self.tags.get(ERROR_ID, '?')}".strip()
        return None

    def track_names(self) -> list[str]:
        return sorted(set(self.tracks.values()))


@dataclass(frozen=True)
class Event:
    """`ready`: the fragment's audio is complete and its contact known; `done`: the fragment ended."""

    kind: Literal["ready", "done"]
    fragment: Fragment


class FragmentAssembler:
    """Reader items in, fragment events out (see the module docstring)."""

    def __init__(self) -> None:
        self._frag: Fragment | None = None

    def feed(self, items: list[Item]) -> list[Event]:
        out: list[Event] = []
        for item in items:
            if isinstance(item, FragmentStart):
                self._end(out)
                self._frag = Fragment()
                continue
            frag = self._frag
            if frag is None:
                self._frag = frag = Fragment()  # a stream that starts mid-fragment: take what it says
            if isinstance(item, Track):
                name = track_name(item.name)
                if name is not None:
                    frag.tracks[item.number] = name
            elif isinstance(item, Block):
                name = frag.tracks.get(item.track)
                if name is not None and not frag.ready:
                    frag.blocks.append((name, item.time_ms, item.payload))
            elif isinstance(item, Tag):
                frag.tags.setdefault(item.name, item.value)
                if not frag.ready and (item.name in (CONTACT_ID, ERROR_CODE, ERROR_ID)):
                    frag.ready = True
                    out.append(Event("ready", frag))
        return out

    def close(self) -> list[Event]:
        """The connection ended. A fragment not yet ready may be cut short: it is dropped, and the
        resumed connection (after the last delivered fragment) brings it again whole."""
        out: list[Event] = []
        frag, self._frag = self._frag, None
        if frag is not None and frag.ready:
            out.append(Event("done", frag))
        return out

    def _end(self, out: list[Event]) -> None:
        frag, self._frag = self._frag, None
        if frag is None:
            return
        if not frag.ready:
            frag.ready = True
            out.append(Event("ready", frag))
        out.append(Event("done", frag))
