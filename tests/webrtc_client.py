"""A real WebRTC peer for tests: aiortc as the client of callscribe's WebRTC ingest.

    asyncio.run(send_file(server.url, token, "speech.wav"))

plays the file in real time as a microphone would (aiortc's MediaPlayer, Opus on the wire) through
POST /v1/media/webrtc, then closes the connection. Usable by any surface that hands out join tokens
(a Chime attendee's JoinToken, say): the token is all it needs. For a browser, `chromium_args(wav)`
are the flags that make Debian's Chromium join `/v1/media/join?token=...` with a WAV as its microphone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from callscribe.urls import WEBRTC_OFFER_PATH

HANG_GUARD_S = 120.0  # only stops a broken test from hanging


def require_host_address() -> None:
    """Fail at once, saying why, where ICE cannot work: on a host whose only interface is loopback."""
    from aioice.ice import get_host_addresses

    if not get_host_addresses(use_ipv4=True, use_ipv6=True):
        pytest.fail("WebRTC tests need a network interface other than loopback (aioice never uses 127.0.0.1)")


async def offer_answer(base_url: str, token: str, pc: RTCPeerConnection) -> httpx.Response:
    """Send pc's offer (all candidates gathered) and, on 200, apply the answer."""
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
        r = await client.post(base_url + WEBRTC_OFFER_PATH,
                              json={"token": token, "sdp": pc.localDescription.sdp, "type": "offer"})
    if r.status_code == 200:
        await pc.setRemoteDescription(RTCSessionDescription(**r.json()))
    return r


async def send_file(base_url: str, token: str, path: str | Path, *, close: bool = True) -> RTCPeerConnection:
    """Stream a WAV to callscribe as one participant; returns once it has all been sent (and the
    connection closed, unless `close` is False)."""
    player = MediaPlayer(str(path))
    assert player.audio is not None
    ended = asyncio.Event()
    player.audio.on("ended", ended.set)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback only: no STUN
    pc.addTransceiver(player.audio, direction="sendonly")
    r = await offer_answer(base_url, token, pc)
    assert r.status_code == 200, r.text
    await asyncio.wait_for(ended.wait(), HANG_GUARD_S)
    if close:
        await pc.close()
    return pc


CHROMIUM = "/usr/bin/chromium"
# ICE on one machine: aioice (the server's ICE, and aiortc clients') never offers 127.0.0.1 or ::1,
# and neither does Chromium, so peers meet on the machine's own interface addresses (a host with no
# interface but loopback cannot run these tests). Chromium hides host candidates behind random `<uuid>.local` names
# unless the page holds a capture permission; the join page takes the microphone before it makes
# its offer, so its candidates are plain addresses (this passes without the flag below).
# --disable-features=WebRtcHideLocalIpsWithMdns keeps the test independent of that policy: aiortc
# would otherwise have to resolve the names by multicast DNS, which a container may not carry.
# Fake UI and device: a WAV as the microphone, permission given without a prompt.
_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns"]


def chromium_args(wav: str | Path, *, loop: bool = True) -> list[str]:
    """Flags for Playwright's launch: headless, the WAV as the microphone (looped unless `loop` is
    False, when Chromium plays it once and then sends silence)."""
    return _CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}"]
