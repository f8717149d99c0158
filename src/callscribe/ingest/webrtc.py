"""WebRTC ingest: one participant's microphone over a WebRTC peer connection (aiortc on our side).

Independent of any control surface: a join token resolves (calls/media.py `MediaGrants`) to the
call and participant whose audio the connection may carry, and this module does the rest.

One peer (`WebRtcPeer`), from its offer to its end:
- the offer is checked (one audio m-line, nothing else: one connection carries one participant);
- the media connects (`media_connected`, the track named after the participant) before the answer,
  so a refusal (the participant's media already live, the server draining) is the HTTP answer;
- the answer carries every candidate of ours (aiortc gathers before answering: no trickle ICE);
- ICE and DTLS must be connected within `connect_timeout_s`, else the media ends;
- the token is resolved again once the media is connected: a grant revoked between the offer's
  check and the connection (an attendee deleted) ends the media and refuses the offer;
- each decoded frame (Opus: 48 kHz s16, stereo as decoded; G.711: 8 kHz) is mixed to mono and
  handed to the call on the RTP clock's timeline, so lost packets are gaps, not shifted speech;
- frames are read as they arrive and never wait for the call: what the call cannot take yet is
  queued up to `MAX_QUEUED_MS`, and beyond that dropped as a gap (see `_receive`);
- the media ends exactly once, with a reason: the connection closed or failed, no audio for
  `idle_timeout_s`, `max_duration_s` reached, a newer connection of the same participant, a drain
  or shutdown of the server.
`WebRtcPeers` holds the live peers of an app, caps their number, and closes them at drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from collections import deque
from typing import Any, Awaitable, Callable

import numpy as np

from callscribe.calls.media import MediaCall, MediaGrant, MediaRefused, MediaRegistry, TrackSpec
from callscribe.ingest.base import AdapterError, TrackTimeline
from callscribe.ingest.limits import UNLIMITED, ConnectionLimits, Slot

log = logging.getLogger(__name__)
# aioice logs each candidate pair's every state at INFO (a dozen lines a connection); our own lines
# say when a peer is answered, connects and ends. An operator's own level for it is kept.
if logging.getLogger("aioice").level == logging.NOTSET:
    logging.getLogger("aioice").setLevel(logging.WARNING)

#: Largest SDP offer taken. A browser's audio-only offer is 2 to 6 KiB; candidates for many
#: interfaces add a few hundred bytes each.
MAX_SDP_BYTES = 32 * 1024
#: A frame within this of where its track stands continues it (Opus frames are 20 ms).
JITTER_MS = 10
#: An RTP clock jump beyond this is a broken sender, not lost packets.
MAX_GAP_MS = 60_000
#: Audio read from the peer and not yet taken by the call (which paces a sender ahead of the
#: engine); beyond this, frames are dropped. ~190 KB of mono 48 kHz s16.
MAX_QUEUED_MS = 2000
#: At the peer's end, how long the queued audio may take to reach the call before it is dropped.
FLUSH_TIMEOUT_S = 5.0

#: The audio codecs aiortc decodes (Opus is what browsers send).
AUDIO_CODECS = frozenset({"opus", "pcmu", "pcma", "g722"})

Key = tuple[str, str, str, str]  # tenant, namespace, guid, participant id
Recheck = Callable[[], Awaitable[MediaGrant | None]]  # resolves the peer's token again


class OfferRefused(Exception):
    """The offer gets no answer: `status` is the HTTP status to answer with, `message` says why
    (safe to show the peer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PeerLimits:
    connect_timeout_s: float = 20.0  # offer -> ICE and DTLS connected
    idle_timeout_s: float = 20.0  # connected, and no audio frame this long
    max_duration_s: float = 4 * 3600.0  # the longest one media session may last


def check_offer(sdp: str) -> None:
    """OfferRefused(400) unless `sdp` parses as an offer sending exactly one audio stream."""
    from aiortc.sdp import SessionDescription

    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise OfferRefused(400, f"sdp is larger than {MAX_SDP_BYTES} bytes")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0" or not all(len(x) >= 2 and x[1] == "=" and x[0].isalpha() for x in lines):
        raise OfferRefused(400, "sdp is not a valid session description (RFC 8866: 'v=0' then '<letter>=<value>' lines)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError... on bad input
        raise OfferRefused(400, f"sdp is not a valid session description ({type(exc).__name__}: {exc})") from None
    kinds = [m.kind for m in description.media]
    if kinds.count("audio") != 1 or len(kinds) != 1:
        found = ", ".join(kinds) or "none"
        raise OfferRefused(400, f"the offer must have exactly one audio m-line and nothing else (found: {found})")
    media = description.media[0]
    if media.direction not in (None, "sendrecv", "sendonly"):
        raise OfferRefused(400, f"the offer's audio is {media.direction}: it must send audio (sendonly or sendrecv)")
    offered = {c.name.lower() for c in media.rtp.codecs}
    if not offered & AUDIO_CODECS:
        raise OfferRefused(400, f"no audio codec in common: the offer has {', '.join(sorted(offered)) or 'none'}; "
                                f"callscribe takes {', '.join(sorted(AUDIO_CODECS))}")


def mono_pcm(frame: Any) -> np.ndarray:
    """A decoded av.AudioFrame (s16, packed or planar, any channel count) -> mono int16, the
    channels averaged as the other ingests mix them."""
    channels = len(frame.layout.channels)
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"unexpected decoded sample format {frame.format.name}")
    data = frame.to_ndarray()
    samples = data.T if frame.format.is_planar else data.reshape(-1, channels)
    if channels == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.int16)
    return samples.astype(np.int32).mean(axis=1).astype(np.int16)


class WebRtcPeer:
    """One peer connection carrying one participant's audio into one call."""

    def __init__(self, registry: MediaRegistry, grant: MediaGrant, *, source: str, slot: Slot, limits: PeerLimits,
                 on_done: Callable[["WebRtcPeer"], None], recheck: Recheck | None = None) -> None:
        self.registry = registry
        self.grant = grant
        self.recheck = recheck
        self.source = source
        self.slot = slot
        self.limits = limits
        self.on_done = on_done
        self.call: MediaCall | None = None
        self.pc: Any = None  # aiortc.RTCPeerConnection
        self.frames = 0
        self.dropped_frames = 0
        self.dropped_ms = 0.0
        self.ended = False
        self.end_reason: str | None = None
        self._track: Any = None
        self._connected = asyncio.Event()
        self._stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._timeline: TrackTimeline | None = None
        self._origin = 0
        # (pcm, rate, timestamp_ms) read and not yet handed to the call; `_queued_ms` of audio.
        self._queue: deque[tuple[np.ndarray, int, int | None]] = deque()
        self._queued_ms = 0.0
        self._ready = asyncio.Event()  # the queue has something, or the reader is done
        self._reading = True
        self._resync = False  # frames were dropped: the next one queued says where it starts

    @property
    def key(self) -> Key:
        g = self.grant
        return g.tenant, g.namespace, g.guid, g.participant.id

    @property
    def label(self) -> str:
        g = self.grant
        return f"{g.participant.id} of {g.namespace}/{g.guid} (from {self.source})"

    async def open(self, offer_sdp: str) -> str:
        """Take the offer, connect the media and return the answer's SDP; OfferRefused when the offer
        cannot be used or the call refuses the media (nothing is left behind then)."""
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        # No ICE servers: aiortc would otherwise ask a public STUN server, and a server's own host
        # candidates are what a peer on its network (or a TURN relay of the peer's) reaches.
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and self._track is None:
                self._track = track

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                self._connected.set()
            elif state == "failed":
                self._stopping("connection failed (ICE or DTLS)")
            elif state == "closed":
                self._stopping("connection closed by the peer")

        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            except Exception as exc:  # aiortc says what it cannot use in ValueError and friends
                raise OfferRefused(400, f"the offer cannot be used: {exc}") from None
            if self._track is None:
                raise OfferRefused(400, "the offer sends no audio track")
            g = self.grant
            try:
                self.call = await self.registry.media_connected(
                    tenant=g.tenant, namespace=g.namespace, guid=g.guid,
                    tracks=[TrackSpec(g.participant.id, g.participant)], source=self.source,
                    metadata={"transport": "webrtc", "surface": g.source, "participant": g.participant.id})
            except MediaRefused as exc:
                raise OfferRefused(503 if exc.capacity else 409, exc.reason) from None
            # The token was checked before the media connected: a revocation in between (an attendee
            # deleted) found no media to end. Checked again now that the media is connected, where a
            # later revocation ends it.
            if self.recheck is not None and await self.recheck() != g:
                await self._finish("the join token was revoked")
                raise OfferRefused(401, "Join token invalid or expired")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # gathers every local candidate into the answer
        except OfferRefused:
            await self._finish("the offer was refused")
            raise
        except Exception as exc:
            closed = self.ended  # a drain closed it while it was being answered
            await self._finish("answering failed")
            if closed:
                raise OfferRefused(503, f"the connection was closed: {self.end_reason}") from None
            raise OfferRefused(500, f"the offer could not be answered: {exc}") from exc
        except BaseException:
            await self._finish("server shutdown")
            raise
        self._task = asyncio.create_task(self._run(), name=f"webrtc-{g.participant.id}")
        log.info("webrtc peer %s: answered", self.label)
        return str(pc.localDescription.sdp)

    def _stopping(self, reason: str) -> None:
        if not self._stop.done():
            self._stop.set_result(reason)

    async def close(self, reason: str) -> None:
        """End this peer (drain, shutdown, a newer connection of the participant) and wait for it."""
        self._stopping(reason)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        else:
            await self._finish(reason)

    async def _run(self) -> None:
        reason = "server shutdown"  # cancellation
        try:
            reason = await self._receive()
        except AdapterError as exc:
            reason = f"protocol error: {exc.reason}"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webrtc peer %s failed", self.label)
            reason = "internal error"
        finally:
            await self._finish(reason)

    async def _wait(self, aw: Any, timeout: float) -> tuple[Any, bool]:
        """Await `aw` (a future or coroutine) unless the peer is stopping or `timeout` passes first.
        Returns (its future, whether it finished)."""
        fut = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({fut, self._stop}, timeout=max(0.0, timeout),
                                     return_when=asyncio.FIRST_COMPLETED)
        if fut not in done:
            fut.cancel()
            await asyncio.gather(fut, return_exceptions=True)
            return fut, False
        return fut, True

    async def _receive(self) -> str:
        _, connected = await self._wait(self._connected.wait(), self.limits.connect_timeout_s)
        if self._stop.done():
            return self._stop.result()
        if not connected:
            return f"ICE did not connect within {self.limits.connect_timeout_s:.0f} s"
        self.slot.started()
        log.info("webrtc peer %s: connected", self.label)
        # Reading and delivering are apart because a WebRTC peer must not be paced. The call paces a
        # sender ahead of the engine by making `audio()` wait; a socket's sender then meets TCP
        # back-pressure, but RTP over UDP has none: aiortc keeps decoding into its track's unbounded
        # queue (~190 KB/s per attendee, without limit from a sender faster than real time). So frames
        # are read as they come, queued up to MAX_QUEUED_MS for the call, and dropped beyond that as a
        # gap on the track's timeline (the next frame queued says where it starts).
        deliver = asyncio.create_task(self._deliver(), name=f"webrtc-deliver-{self.grant.participant.id}")
        try:
            reason = await self._read()
            self._reading = False
            self._ready.set()
            done, _ = await asyncio.wait({deliver}, timeout=FLUSH_TIMEOUT_S)  # the last audio reaches the call
            if deliver not in done:
                log.warning("webrtc peer %s: %d ms of queued audio dropped at the end", self.label, self._queued_ms)
            return reason
        finally:
            self._reading = False
            self._ready.set()
            if not deliver.done():
                deliver.cancel()
            await asyncio.gather(deliver, return_exceptions=True)

    async def _read(self) -> str:
        """Take the peer's frames until it stops; returns why."""
        from aiortc.mediastreams import MediaStreamError

        ends_at = time.monotonic() + self.limits.max_duration_s
        while True:
            left = ends_at - time.monotonic()
            if left <= 0:
                return f"session longer than the maximum of {self.limits.max_duration_s:.0f} s"
            fut, got = await self._wait(self._track.recv(), min(self.limits.idle_timeout_s, left))
            error = fut.exception() if got else None  # (retrieved even when the peer is stopping)
            if self._stop.done():
                return self._stop.result()
            if not got:
                if time.monotonic() >= ends_at:
                    continue
                return f"no audio for {self.limits.idle_timeout_s:.0f} s"
            if isinstance(error, MediaStreamError):
                return "the peer's audio track ended"
            if error is not None:
                raise error
            if getattr(self.call, "ended", False):  # the registry ended it (call discarded, shutdown)
                return "the call ended the media"
            self._take(fut.result())

    def _take(self, frame: Any) -> None:
        """Place a decoded frame on the track's timeline and queue it for the call (or drop it)."""
        rate = int(frame.sample_rate)
        pcm = mono_pcm(frame)
        pts = int(frame.pts) if frame.pts is not None else None
        if self._timeline is None:
            self._timeline = TrackTimeline(rate, JITTER_MS, MAX_GAP_MS)
            self._origin = pts or 0  # aiortc's RTP clock (unwrapped) at this track's first frame
        elif rate != self._timeline.sample_rate:  # one codec per connection: we never renegotiate
            raise AdapterError(f"the audio's sample rate changed from {self._timeline.sample_rate} to {rate}")
        timestamp_ms = None
        if pts is not None:  # pts counts in the frame's time base (1/48000 for Opus, 1/16000 for G.722)
            base = frame.time_base or Fraction(1, rate)
            timestamp_ms = int((pts - self._origin) * base * 1000)
        drop, at_ms = self._timeline.place(timestamp_ms, len(pcm))
        if drop >= len(pcm):
            return
        pcm = pcm[drop:] if drop else pcm
        ms = len(pcm) * 1000 / rate
        if self._queued_ms + ms > MAX_QUEUED_MS:  # the call is this far behind: the frame is a gap
            if not self.dropped_frames:
                log.warning("webrtc peer %s: the call is %d ms behind; dropping audio", self.label, self._queued_ms)
            self.dropped_frames += 1
            self.dropped_ms += ms
            self._resync = True
            return
        if self._resync and at_ms is None:  # after dropped frames, this one starts after their gap
            at_ms = (self._timeline.samples - len(pcm)) * 1000 // rate
        self._resync = False
        self.frames += 1
        self._queue.append((pcm, rate, at_ms))
        self._queued_ms += ms
        self._ready.set()

    async def _deliver(self) -> None:
        """Hand the queued frames to the call, waiting as long as it paces them."""
        assert self.call is not None
        while True:
            while not self._queue:
                if not self._reading:
                    return
                self._ready.clear()
                await self._ready.wait()
            pcm, rate, at_ms = self._queue.popleft()
            self._queued_ms = max(0.0, self._queued_ms - len(pcm) * 1000 / rate)
            try:
                await self.call.audio(self.grant.participant.id, pcm, rate, at_ms)
            except Exception:
                log.exception("webrtc peer %s: the call refused audio", self.label)
                self._stopping("internal error")
                return

    async def _finish(self, reason: str) -> None:
        """End the media (once), close the connection, give back the slot. Never raises."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self._stopping(reason)
        if self.call is not None:
            try:
                await self.call.end(reason)
            except Exception:
                log.exception("webrtc peer %s: ending the media failed", self.label)
            log.info("webrtc peer %s ended: %s (%d frames, %d dropped: %.0f ms)", self.label, reason, self.frames,
                     self.dropped_frames, self.dropped_ms)
        if self.pc is not None:
            try:
                await self.pc.close()
            except Exception:
                log.debug("closing the peer connection failed", exc_info=True)
        self.slot.release()
        self.on_done(self)


class WebRtcPeers:
    """The live peers of one app: at most `max_peers`, each under the process's connection limits;
    a participant has one peer at a time (a newer connection replaces the older, as a rejoining
    attendee's browser does)."""

    def __init__(self, registry: Callable[[], MediaRegistry | None], *, max_peers: int, limits: PeerLimits,
                 connections: ConnectionLimits | None = None) -> None:
        self._registry = registry
        self.max_peers = max_peers
        self.limits = limits
        self.connections = connections or UNLIMITED
        self.peers: set[WebRtcPeer] = set()
        self._by_key: dict[Key, WebRtcPeer] = {}
        self.closing = False

    async def connect(self, grant: MediaGrant, offer_sdp: str, *, source: str, address: str,
                      recheck: Recheck | None = None) -> str:
        """Answer an offer for `grant` from `address` (`source` names the peer in logs and the call's
        metadata); returns the answer's SDP, or raises OfferRefused. `recheck` resolves the grant's
        token again once the media is connected (None or another grant: revoked meanwhile)."""
        registry = self._registry()
        if registry is None:
            raise OfferRefused(503, "not ready")
        if self.closing:
            raise OfferRefused(503, "the server is shutting down")
        check_offer(offer_sdp)
        if len(self.peers) >= self.max_peers:
            raise OfferRefused(503, f"too many WebRTC connections (at most {self.max_peers})")
        slot = self.connections.take(address)
        if isinstance(slot, str):
            raise OfferRefused(503, slot)
        peer = WebRtcPeer(registry, grant, source=source, slot=slot, limits=self.limits, on_done=self._done,
                          recheck=recheck)
        self.peers.add(peer)  # counted from now: concurrent offers cannot pass the cap together
        previous = self._by_key.get(peer.key)
        if previous is not None:
            await previous.close("replaced by a newer connection of the same participant")
        try:
            answer = await peer.open(offer_sdp)
        except BaseException:
            self.peers.discard(peer)
            raise
        if peer.ended:  # closed (drain) while it was being answered
            raise OfferRefused(503, "the server is shutting down")
        self._by_key[peer.key] = peer
        return answer

    def _done(self, peer: WebRtcPeer) -> None:
        self.peers.discard(peer)
        if self._by_key.get(peer.key) is peer:
            del self._by_key[peer.key]

    async def close(self, tenant: str, namespace: str, guid: str, participant: str | None = None, *,
                    reason: str) -> int:
        """End the peers of a call (or of one participant of it): a surface revoked their grants.
        Returns how many were ended."""
        mine = [p for p in list(self.peers)
                if p.key[:3] == (tenant, namespace, guid) and (participant is None or p.key[3] == participant)]
        await asyncio.gather(*(p.close(reason) for p in mine), return_exceptions=True)
        return len(mine)

    async def drain(self, reason: str = "server shutdown") -> None:
        """Refuse new offers and end every peer (SIGTERM, or the app stopping)."""
        self.closing = True
        await asyncio.gather(*(p.close(reason) for p in list(self.peers)), return_exceptions=True)
