"""One SIPREC recording session (RFC 7866): the dialog's state, its RTP ports and the call's media."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callscribe.calls.media import MediaCall, Participant, TrackSpec
from callscribe.ingest.siprec import sdp
from callscribe.ingest.siprec.metadata import Metadata
from callscribe.ingest.siprec.rtp import RtcpSink, RtpReceiver

log = logging.getLogger(__name__)

Send = Callable[[bytes], None]


class PortPool:
    """RTP ports from CALLSCRIBE_RTP_PORTS: even RTP ports with RTCP on the odd one above, and a
    session's m-lines on consecutive pairs (R, R+2, ...), which SIPp's pcap replay also expects."""

    def __init__(self, low: int, high: int):
        self.low = low + (low % 2)
        self.high = high
        self.used: set[int] = set()
        self.cursor = self.low

    async def bind(self, host: str, count: int, make: Callable[[int], RtpReceiver]
                   ) -> tuple[int, list[tuple[RtpReceiver, asyncio.BaseTransport]]] | None:
        """Bind `count` consecutive pairs; (first port, [(receiver, rtcp transport)]) or None."""
        loop = asyncio.get_running_loop()
        span = 2 * count
        size = self.high + 1 - self.low
        for step in range(0, max(size, 0), 2):
            start = self.low + (self.cursor - self.low + step) % max(size, 1)
            if start % 2 or start + span - 1 > self.high or any(p in self.used for p in range(start, start + span)):
                continue
            bound: list[tuple[RtpReceiver, asyncio.BaseTransport]] = []
            opened: list[asyncio.BaseTransport] = []
            try:
                for i in range(count):
                    receiver = make(i)
                    rtp, _ = await loop.create_datagram_endpoint(lambda r=receiver: r,  # type: ignore[misc]
                                                                 local_addr=(host, start + 2 * i))
                    opened.append(rtp)
                    rtcp, _ = await loop.create_datagram_endpoint(RtcpSink, local_addr=(host, start + 2 * i + 1))
                    opened.append(rtcp)
                    bound.append((receiver, rtcp))
            except OSError:  # taken by another process: try the next pairs
                for t in opened:
                    t.close()
                continue
            self.used.update(range(start, start + span))
            self.cursor = start + span
            return start, bound
        return None

    def release(self, start: int, count: int) -> None:
        self.used.difference_update(range(start, start + 2 * count))


def track_participant(index: int, role_order: tuple[str, ...], meta: Metadata | None, label: str) -> Participant:
    """The participant of m-line `index`: customer/agent by the media-line order, named from metadata."""
    role = role_order[index] if index < len(role_order) else "participant"
    pid = role if index < len(role_order) else f"participant-{index}"
    speaker = meta.speaker_of(label) if meta is not None and label else None
    if speaker is None and meta is not None and index < len(meta.participants) and not any(
            p.sends for p in meta.participants):
        speaker = meta.participants[index]  # metadata without stream associations: in order
    name = (speaker.name or speaker.aor) if speaker else ""
    return Participant(pid, role, name=name[:200] if name.isprintable() else "")


@dataclass
class Dialog:
    """What is needed to speak in the dialog (our BYE): the INVITE's headers and where it came from."""

    call_id: str
    local_tag: str
    remote_from: str  # the INVITE's From (their identity, with their tag)
    local_to: str  # the INVITE's To with our tag
    remote_target: str  # their Contact URI
    via_transport: str  # "UDP" or "TCP"
    send: Send
    cseq: int = field(default_factory=lambda: secrets.randbelow(10000) + 1)


class RecordingSession:
    def __init__(self, *, tenant: str, guid: str, dialog: Dialog, offer: sdp.Offer, metadata: Metadata | None,
                 session_expires: int = 0):
        self.tenant = tenant
        self.guid = guid
        self.dialog = dialog
        self.offer = offer
        self.metadata = metadata
        self.media: MediaCall | None = None
        self.ports: dict[int, int] = {}  # m-line index -> RTP port
        self.receivers: dict[int, RtpReceiver] = {}
        self.rtcp: list[asyncio.BaseTransport] = []
        self.first_port = 0
        self.sdp_version = 1
        self.sdp_id = int(time.time())
        self.held: set[int] = set()
        self.acked = asyncio.Event()
        self.ended = False
        self.origin = time.monotonic()
        self.session_expires = session_expires
        self.refreshed = time.monotonic()
        self.answer = b""

    def tracks(self, role_order: tuple[str, ...]) -> list[TrackSpec]:
        return [TrackSpec(str(i), track_participant(i, role_order, self.metadata, self.offer.media[i].label))
                for i in sorted(self.ports)]

    def metadata_view(self, call_id: str, ucid: str) -> dict[str, Any]:
        return {"siprec": {"call_id": call_id, "ucid": ucid,
                           "labels": {str(i): self.offer.media[i].label for i in sorted(self.ports)},
                           **(self.metadata.as_dict() if self.metadata else {})}}

    def make_receiver(self, index: int, allowed: Callable[[str], bool]) -> RtpReceiver:
        m = self.offer.media[index]
        codecs = {pt: name for pt in (int(f) for f in m.formats if f.isdigit())
                  if (name := m.codec_of(pt)) in sdp.CODECS and m.clock.get(pt, 8000) == 8000}
        track = str(index)

        async def on_audio(pcm: np.ndarray, rate: int, at_ms: int) -> None:
            if self.media is not None and index not in self.held:
                await self.media.audio(track, pcm, rate, at_ms)

        async def on_event(name: str, data: dict) -> None:
            if self.media is not None:
                await self.media.event(name, {**data, "track": track})

        return RtpReceiver(codecs, m.dtmf_pt(), self.origin, allowed, on_audio, on_event)

    def idle_s(self) -> float:
        if self.receivers and len(self.held) >= len(self.receivers):
            return 0.0  # on hold: no media is expected
        last = max([r.last_packet for r in self.receivers.values()] + [self.origin])
        return time.monotonic() - last

    def answer_sdp(self, host: str) -> bytes:
        self.answer = sdp.answer(self.offer, self.ports, host, session_id=self.sdp_id, version=self.sdp_version,
                                 inactive=self.held)
        return self.answer

    async def close(self, reason: str) -> None:
        """End the call's media (idempotent) and release the ports."""
        if self.ended:
            return
        self.ended = True
        for receiver in self.receivers.values():
            await receiver.close()
        for t in self.rtcp:
            t.close()
        if self.media is not None:
            await self.media.end(reason)
