"""RTP (RFC 3550) for one recorded stream: packet parsing, a small reordering buffer, and the
receiver that turns packets into timed PCM for one track.

Timing: each SSRC's RTP clock is anchored at the wall-clock moment its first packet arrived, so a
lost packet or a hold leaves a gap on the track's timeline (the registry bridges or skips it) and a
new SSRC (a transfer on the SRC) starts where it arrives instead of where its random timestamp says.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from callscribe.audio.codecs import alaw_decode, ulaw_decode

log = logging.getLogger(__name__)

DEPTH = 4  # packets held for reordering (80 ms of 20 ms packets)
HOLD_S = 0.25  # a buffered packet older than this is let out even if the gap before it never fills
MAX_PAYLOAD = 1500
DTMF_DIGITS = "0123456789*#ABCD"


@dataclass
class RtpPacket:
    pt: int
    seq: int
    ts: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet, or None for anything else (RTCP, STUN, garbage)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    pt = b1 & 0x7F
    if 72 <= pt <= 76:  # RTCP sent to the RTP port (rtcp-mux)
        return None
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if b0 & 0x20:  # padding
        pad = data[-1]
        if pad == 0 or pad > end - offset:
            return None
        end -= pad
    if offset > end or end - offset > MAX_PAYLOAD:
        return None
    return RtpPacket(pt, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[offset:end]))


class JitterBuffer:
    """Puts packets of one SSRC back in sequence order, holding at most DEPTH of them.

    Sequence numbers are extended past 16-bit wrap; a packet older than the last one let out, or a
    duplicate, is dropped; missing packets are given up on once DEPTH later ones wait or the oldest
    waiting one is HOLD_S old."""

    def __init__(self, depth: int = DEPTH):
        self.depth = depth
        self.waiting: dict[int, tuple[RtpPacket, float]] = {}
        self.next_seq: int | None = None
        self.highest: int | None = None

    def _extend(self, seq: int) -> int:
        if self.highest is None:
            return seq + 65536  # room below the first packet for reordered earlier ones
        base = self.highest & ~0xFFFF
        ext = base | seq
        if ext - self.highest > 32768:
            ext -= 65536
        elif self.highest - ext > 32768:
            ext += 65536
        return ext

    def push(self, packet: RtpPacket, now: float) -> list[RtpPacket]:
        ext = self._extend(packet.seq)
        if self.next_seq is not None and ext < self.next_seq:
            return []  # late or duplicate
        if ext in self.waiting:
            return []
        if self.next_seq is None:
            self.next_seq = ext
        self.highest = ext if self.highest is None else max(self.highest, ext)
        self.waiting[ext] = (packet, now)
        return self.pop(now)

    def pop(self, now: float, flush: bool = False) -> list[RtpPacket]:
        out = []
        while self.waiting and self.next_seq is not None:
            if self.next_seq in self.waiting:
                out.append(self.waiting.pop(self.next_seq)[0])
                self.next_seq += 1
                continue
            oldest = min(self.waiting)
            if flush or len(self.waiting) > self.depth or now - self.waiting[oldest][1] > HOLD_S:
                self.next_seq = oldest  # give up on the missing ones
                continue
            break
        return out


AudioSink = Callable[[np.ndarray, int, int], Awaitable[None]]  # pcm, rate, timestamp_ms
EventSink = Callable[[str, dict], Awaitable[None]]


class RtpReceiver(asyncio.DatagramProtocol):
    """One m-line's RTP port. Latches onto the first allowed source that sends RTP to it and drops
    packets from anyone else; decodes the payload types the answer agreed to."""

    def __init__(self, codecs: dict[int, str], dtmf_pt: int | None, clock_origin: float,
                 allowed: Callable[[str], bool], on_audio: AudioSink, on_event: EventSink):
        self.codecs = codecs  # pt -> "PCMU"/"PCMA"
        self.dtmf_pt = dtmf_pt
        self.origin = clock_origin  # monotonic time the media session began
        self.allowed = allowed
        self.on_audio = on_audio
        self.on_event = on_event
        self.transport: asyncio.DatagramTransport | None = None
        self.source: tuple[str, int] | None = None
        self.ssrc: int | None = None
        self.buffer = JitterBuffer()
        self.anchor: tuple[float, int] = (0.0, 0)  # (ms on the session timeline, extended RTP ts)
        self.last_ts: int | None = None
        self.last_packet = time.monotonic()
        self.packets = 0
        self.dropped = 0
        self._dtmf_seen: set[int] = set()
        self._queue: asyncio.Queue[tuple[np.ndarray, int] | tuple[str, dict] | None] = asyncio.Queue(maxsize=500)
        self._consumer: asyncio.Task | None = None
        self._flusher: asyncio.TimerHandle | None = None

    # asyncio protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._consumer = asyncio.get_running_loop().create_task(self._consume())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
        if self._flusher is not None:
            self._flusher.cancel()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        source = (addr[0], addr[1])
        if self.source is None:
            if not self.allowed(source[0]):
                self.dropped += 1
                return
        elif source != self.source:
            self.dropped += 1
            return
        packet = parse_rtp(data)
        if packet is None or (packet.pt not in self.codecs and packet.pt != self.dtmf_pt):
            self.dropped += 1  # RTCP, comfort noise, a codec not agreed, garbage
            return
        self.source = source
        self.last_packet = now = time.monotonic()
        self.packets += 1
        if packet.ssrc != self.ssrc:
            self._drain(now, flush=True)
            self.ssrc = packet.ssrc
            self.buffer = JitterBuffer()
            self.last_ts = None
        self._emit(self.buffer.push(packet, now), now)
        if self.buffer.waiting and self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(HOLD_S, self._timed_flush)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from earlier sends; the receiver sends nothing

    # packets -> timed audio ------------------------------------------------------------------------

    def _timed_flush(self) -> None:
        self._flusher = None
        self._drain(time.monotonic())
        if self.buffer.waiting:
            self._flusher = asyncio.get_running_loop().call_later(HOLD_S, self._timed_flush)

    def _drain(self, now: float, flush: bool = False) -> None:
        self._emit(self.buffer.pop(now, flush=flush), now)

    def _extend_ts(self, ts: int) -> int:
        if self.last_ts is None:
            return ts
        ext = (self.last_ts & ~0xFFFFFFFF) | ts
        if ext - self.last_ts > 2**31:
            ext -= 2**32
        elif self.last_ts - ext > 2**31:
            ext += 2**32
        return ext

    def _emit(self, packets: list[RtpPacket], now: float) -> None:
        for p in packets:
            ts = self._extend_ts(p.ts)
            if self.last_ts is None:
                self.anchor = ((now - self.origin) * 1000.0, ts)
            self.last_ts = ts
            if p.pt == self.dtmf_pt:
                self._dtmf(p)
                continue
            payload = np.frombuffer(p.payload, dtype=np.uint8)
            pcm = ulaw_decode(payload) if self.codecs[p.pt] == "PCMU" else alaw_decode(payload)
            at = int(self.anchor[0] + (ts - self.anchor[1]) / 8)
            self._put((pcm, max(at, 0)))

    def _dtmf(self, p: RtpPacket) -> None:
        # RFC 4733: event, E bit; the end packet is sent three times, so keep the first per timestamp.
        if len(p.payload) >= 4 and p.payload[1] & 0x80 and p.ts not in self._dtmf_seen and p.payload[0] < 16:
            self._dtmf_seen.add(p.ts)
            del_old = sorted(self._dtmf_seen)[:-16]
            self._dtmf_seen.difference_update(del_old)
            self._put(("dtmf", {"digit": DTMF_DIGITS[p.payload[0]]}))

    def _put(self, item: tuple[np.ndarray, int] | tuple[str, dict]) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1  # the call is not keeping up; drop rather than grow without bound

    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            a, b = item
            try:
                if isinstance(a, str):
                    await self.on_event(a, b)  # type: ignore[arg-type]
                else:
                    await self.on_audio(a, 8000, b)  # type: ignore[arg-type]
            except Exception:
                log.exception("RTP receiver: delivering media failed")

    def relatch(self) -> None:
        """After a hold or a new offer the sender may have moved and its clock jumped: latch onto the
        next source that sends, and anchor its timestamps afresh (as for a new SSRC)."""
        self.source = None
        self.ssrc = None

    async def close(self) -> None:
        """Let out what is buffered, deliver it, and close the port."""
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self._drain(time.monotonic(), flush=True)
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._queue.put(None), 5)
                await asyncio.wait_for(self._consumer, 10)
            except TimeoutError:
                self._consumer.cancel()
        if self.transport is not None:
            self.transport.close()


class RtcpSink(asyncio.DatagramProtocol):
    """Holds the RTCP port (RTP port + 1) so the SRC's reports are not answered with ICMP errors."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def error_received(self, exc: Exception) -> None:
        pass
