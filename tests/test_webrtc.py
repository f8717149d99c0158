"""WebRTC ingest end to end, with real WebRTC peers written by others.

- aiortc as the client (tests/webrtc_client.py) plays synthesised speech as one participant; the
  call's transcription is started with the ASAPP API and its finals come back on the native events
  WebSocket attributed to that participant.
- Debian's Chromium, headless, loads the join page with a fake microphone fed from a WAV; its words
  come back the same way, and Leave ends the media.
- Refusals: no or unknown token (401), unusable SDP or body (400), a drain (503).
- The media ends exactly once: peer close, ICE that never connects, drain, a token revoked while
  the media connected; a page whose connection the server ends releases the microphone.
- A call that is behind never stops the peer being read (UDP has no back-pressure): the excess is
  dropped as a gap.

The join tokens are resolved by a resolver the test registers on the running app's `media_grants`
(as a surface that hands out join tokens does). Every wait is for a condition; nothing is timed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from callscribe.calls.media import MediaGrant, Participant
from callscribe.config import load_settings
from callscribe.testing import speech
from callscribe.testing.wav import write_wav
from callscribe.urls import WEBRTC_JOIN_PAGE_PATH, WEBRTC_OFFER_PATH
from servers import running_app, wait_until
from webrtc_client import CHROMIUM, HANG_GUARD_S, chromium_args, offer_answer, require_host_address, send_file

HEADERS = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
TEXT = "Thank you for calling Northwind support. Your parcel left our warehouse this morning."
WORDS = {"northwind", "support", "parcel", "warehouse", "morning"}
# Any namespace the ASAPP surface serves: the grant names the call, and the transport does not care
# which surface made it.
NAMESPACE = "twilio"
ATTENDEE = Participant("attendee-7", "attendee", name="Ada", external_id="ada@example.com")


def grant_for(guid: str, participant: Participant = ATTENDEE) -> MediaGrant:
    return MediaGrant("acme", NAMESPACE, guid, participant, source="test")


def register_tokens(server, tokens: dict[str, MediaGrant]) -> None:
    """Join tokens the running app resolves, as a surface's resolver would."""
    require_host_address()

    async def resolve(token: str) -> MediaGrant | None:
        return tokens.get(token)

    server.services.media_grants.register(resolve)


def words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """The sentence with silence around it, as a 16 kHz WAV (aiortc resamples it to 48 kHz Opus,
    Chromium's fake microphone likewise)."""
    audio = np.concatenate([speech.silence(1.5), speech.say(TEXT, "joe"), speech.silence(2.0)])
    path = tmp_path_factory.mktemp("webrtc-audio") / "speech.wav"
    write_wav(path, audio, speech.SAMPLE_RATE)
    return path


@pytest.fixture
def app(engine, tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys="ka:sa:acme",
                             start_wait_for_media_s=30, webrtc_idle_timeout_s=10)
    with running_app(settings, engine=engine) as server:
        yield server


def start_streaming(server, guid: str) -> httpx.Response:
    return httpx.post(server.url + "/mg-autotranscribe/v1/start-streaming", headers=HEADERS, timeout=HANG_GUARD_S,
                      json={"namespace": NAMESPACE, "guid": guid, "customerId": "c-1", "agentId": "a-1"})


class EventsReader:
    """The call's native events WebSocket, read on a thread until the server closes it (after
    media-ended)."""

    def __init__(self, server, guid: str) -> None:
        self.events: list[dict] = []
        self.code: int | None = None
        self._ws = connect(f"{server.ws_url}/v1/calls/{guid}/events?apiId=ka&apiSecret=sa&since=0")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._ws:
                while True:
                    self.events.append(json.loads(self._ws.recv(timeout=HANG_GUARD_S)))
        except ConnectionClosed as exc:
            self.code = exc.rcvd.code if exc.rcvd else None

    def finals(self) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == "final"]

    def heard(self) -> set[str]:
        return set().union(*(words(e["text"]) for e in self.finals()))

    def states(self) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == "state"]

    def join(self) -> None:
        self._thread.join(HANG_GUARD_S)
        assert not self._thread.is_alive(), "the events socket did not close after the media ended"


def assert_attendee_transcripts(reader: EventsReader) -> None:
    finals = reader.finals()
    assert len(reader.heard() & WORDS) >= len(WORDS) - 1, [e["text"] for e in finals]
    assert {(e["participant"], e["role"], e["participantName"], e["externalId"]) for e in finals} == {
        ("attendee-7", "attendee", "Ada", "ada@example.com")}


def media_ended(reader: EventsReader) -> list[dict]:
    return [e for e in reader.states() if e["state"] == "media-ended"]


# aiortc as the client ------------------------------------------------------------------------------


@pytest.mark.slow
def test_aiortc_client_speech_comes_back_as_the_participants_transcript(app, speech_wav):
    guid = "webrtc-aiortc-1"
    register_tokens(app, {"tok-ada": grant_for(guid)})
    started: dict[str, httpx.Response] = {}
    # Start and connect together: start-streaming waits for the call's media (the offer connects it),
    # or finds it connected; the WAV's leading silence covers either order.
    starter = threading.Thread(target=lambda: started.setdefault("r", start_streaming(app, guid)))
    starter.start()

    async def client() -> None:
        pc = await send_file(app.url, "tok-ada", speech_wav, close=False)
        assert pc.connectionState == "connected"
        await pc.close()

    def run_client() -> None:
        asyncio.run(client())

    thread = threading.Thread(target=run_client)
    thread.start()
    starter.join(HANG_GUARD_S)
    assert started["r"].status_code == 200, started["r"].text
    reader = EventsReader(app, guid)
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()
    reader.join()  # the client closed its connection: the media ended and the socket closed
    assert_attendee_transcripts(reader)
    ended = media_ended(reader)
    assert len(ended) == 1 and reader.code == 1000, reader.states()
    connected = [e for e in reader.states() if e["state"] == "media-connected"]
    assert connected and connected[0]["data"]["metadata"]["transport"] == "webrtc", connected


# Refusals ------------------------------------------------------------------------------------------


def _offer_sdp() -> str:
    """A real audio offer from aiortc."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import AudioStreamTrack

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_bad_tokens_bodies_and_sdp_are_refused(start_app):
    server = start_app()
    register_tokens(server, {"good": grant_for("webrtc-refusals")})
    url = server.url + WEBRTC_OFFER_PATH
    offer = _offer_sdp()

    r = httpx.post(url, json={"sdp": offer, "type": "offer"})
    assert r.status_code == 401 and "token" in r.json()["error"]["message"]
    r = httpx.post(url, json={"token": "nope", "sdp": offer, "type": "offer"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Join token invalid or expired"
    r = httpx.post(url, json={"sdp": offer, "type": "offer"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"

    r = httpx.post(url, content=b"not json", headers={"Authorization": "Bearer good"})
    assert r.status_code == 400
    r = httpx.post(url, json={"token": "good", "sdp": offer, "type": "answer"})
    assert r.status_code == 400 and "offer" in r.json()["error"]["message"]
    r = httpx.post(url, json={"token": "good", "type": "offer"})
    assert r.status_code == 400 and "sdp" in r.json()["error"]["message"]
    r = httpx.post(url, json={"token": "good", "sdp": "this is not SDP", "type": "offer"})
    assert r.status_code == 400 and "not a valid session description" in r.json()["error"]["message"], r.text
    video = offer.replace("m=audio", "m=video")
    r = httpx.post(url, json={"token": "good", "sdp": video, "type": "offer"})
    assert r.status_code == 400 and "exactly one audio m-line" in r.json()["error"]["message"], r.text
    recvonly = offer.replace("a=sendonly", "a=recvonly")
    r = httpx.post(url, json={"token": "good", "sdp": recvonly, "type": "offer"})
    assert r.status_code == 400 and "must send audio" in r.json()["error"]["message"], r.text
    g729 = re.sub(r"(m=audio \d+ \S+) .*", r"\1 18", offer)
    g729 = "\r\n".join(x for x in g729.split("\r\n") if not x.startswith(("a=rtpmap", "a=fmtp", "a=rtcp-fb")))
    g729 = g729.replace("a=sendonly", "a=sendonly\r\na=rtpmap:18 G729/8000")
    r = httpx.post(url, json={"token": "good", "sdp": g729, "type": "offer"})
    assert r.status_code == 400 and "no audio codec in common" in r.json()["error"]["message"], r.text
    no_ice = "\r\n".join(line for line in offer.split("\r\n") if not line.startswith("a=ice-"))
    r = httpx.post(url, json={"token": "good", "sdp": no_ice, "type": "offer"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("the offer cannot be used"), r.text
    r = httpx.post(url, json={"token": "good", "sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer"})
    assert r.status_code in (400, 413)

    # None of these connected any media.
    assert server.run(_call_view(server, "webrtc-refusals")) is None
    assert not server.app.state.webrtc_peers.peers


async def _call_view(server, guid: str):
    return server.services.registry.get_call("acme", guid, NAMESPACE)


def test_ice_that_never_connects_ends_the_media_once(start_app):
    """An offer whose peer never answers connectivity checks: the media connects with the answer and
    ends once, when the connect timeout passes."""
    server = start_app(webrtc_connect_timeout_s=2)
    register_tokens(server, {"t": grant_for("webrtc-no-ice")})
    offer = _offer_sdp()  # its peer is closed: nobody answers the server's checks
    r = httpx.post(server.url + WEBRTC_OFFER_PATH, json={"token": "t", "sdp": offer, "type": "offer"})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "answer" and "a=candidate" in r.json()["sdp"]
    wait_until(lambda: not server.app.state.webrtc_peers.peers, "the peer to end")
    view = wait_until(lambda: server.run(_call_view(server, "webrtc-no-ice")), "the call's view")
    assert view["media"] == "ended", view
    reader = EventsReader(server, "webrtc-no-ice")  # replays the stored states, then closes
    reader.join()
    ended = media_ended(reader)
    # Its checks go unanswered: the connect timeout passes (or, were aioice quicker, ICE fails).
    assert len(ended) == 1 and ended[0]["data"]["reason"] in (
        "ICE did not connect within 2 s", "connection failed (ICE or DTLS)"), reader.states()


def test_a_grant_revoked_while_the_media_connects_refuses_the_offer(start_app, monkeypatch):
    """The token is revoked (an attendee deleted) after the offer's check, before its media connects:
    the revocation finds no media to end, so the peer checks the token again once it is connected."""
    server = start_app()
    tokens = {"gone": grant_for("webrtc-revoked")}
    register_tokens(server, tokens)
    registry = server.services.registry
    connect = registry.media_connected

    async def revoked_meanwhile(**kwargs):
        tokens.pop("gone", None)
        return await connect(**kwargs)

    monkeypatch.setattr(registry, "media_connected", revoked_meanwhile)
    r = httpx.post(server.url + WEBRTC_OFFER_PATH, json={"token": "gone", "sdp": _offer_sdp(), "type": "offer"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "Join token invalid or expired", r.text
    assert not server.app.state.webrtc_peers.peers
    view = server.run(_call_view(server, "webrtc-revoked"))
    assert view["media"] == "ended", view
    reader = EventsReader(server, "webrtc-revoked")
    reader.join()
    assert [e["data"]["reason"] for e in media_ended(reader)] == ["the join token was revoked"], reader.states()


def test_drain_ends_live_peers_and_refuses_new_offers(start_app, speech_wav):
    server = start_app()
    register_tokens(server, {"a": grant_for("webrtc-drain"), "b": grant_for("webrtc-drain-2")})
    peers = server.app.state.webrtc_peers
    result: dict[str, object] = {}

    async def client() -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.contrib.media import MediaPlayer

        player = MediaPlayer(str(speech_wav), loop=True)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(player.audio, direction="sendonly")
        r = await offer_answer(server.url, "a", pc)
        result["status"] = r.status_code
        closed = asyncio.Event()

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState in ("closed", "failed"):
                closed.set()

        while not any(p.frames for p in list(peers.peers)):
            await asyncio.sleep(0.05)
        result["draining"] = True
        await asyncio.wait_for(closed.wait(), HANG_GUARD_S)  # the server closed the connection
        result["state"] = pc.connectionState
        await pc.close()

    thread = threading.Thread(target=lambda: asyncio.run(client()))
    thread.start()
    wait_until(lambda: result.get("draining"), "audio flowing")
    peer = next(iter(peers.peers))
    server.run(server.services.drain())
    assert peer.ended and peer.end_reason == "server shutdown"
    r = httpx.post(server.url + WEBRTC_OFFER_PATH, json={"token": "b", "sdp": _offer_sdp(), "type": "offer"})
    assert r.status_code == 503 and r.headers.get("retry-after"), r.text
    thread.join(HANG_GUARD_S)
    assert result["status"] == 200 and result["state"] in ("closed", "failed"), result
    view = server.run(_call_view(server, "webrtc-drain"))
    assert view["media"] == "ended", view


class SilentTrack:
    """An audio track that never yields a frame: the connection is up, no audio flows."""

    @staticmethod
    def make():
        from aiortc.mediastreams import MediaStreamTrack

        class Silent(MediaStreamTrack):
            kind = "audio"

            async def recv(self):
                await asyncio.Event().wait()

        return Silent()


def test_no_audio_ends_the_media_and_the_peer_cap_refuses_more(start_app):
    server = start_app(webrtc_idle_timeout_s=1, webrtc_max_peers=1)
    register_tokens(server, {"quiet": grant_for("webrtc-idle"), "more": grant_for("webrtc-idle-2")})
    peers = server.app.state.webrtc_peers
    result: dict[str, object] = {}

    async def client() -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(SilentTrack.make(), direction="sendonly")
        result["first"] = (await offer_answer(server.url, "quiet", pc)).status_code
        # While it holds the only place, another participant's offer is refused.
        other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        other.addTransceiver(SilentTrack.make(), direction="sendonly")
        r = await offer_answer(server.url, "more", other)
        result["second"] = (r.status_code, r.json()["error"]["message"], r.headers.get("retry-after"))
        await other.close()
        while peers.peers:
            await asyncio.sleep(0.05)
        await pc.close()

    asyncio.run(client())
    assert result["first"] == 200
    assert result["second"] == (503, "too many WebRTC connections (at most 1)", "5"), result
    reader = EventsReader(server, "webrtc-idle")
    reader.join()
    ended = media_ended(reader)
    assert [e["data"]["reason"] for e in ended] == ["no audio for 1 s"], reader.states()


def test_a_newer_connection_of_the_participant_replaces_the_older(start_app, speech_wav):
    from callscribe.calls.events import CallStateEvent

    server = start_app()
    register_tokens(server, {"ada": grant_for("webrtc-rejoin")})
    peers = server.app.state.webrtc_peers
    states: list[CallStateEvent] = []  # every state of the call, from the bus (the events socket ends at the first end)
    server.services.bus.subscribe(lambda e: states.append(e) if isinstance(e, CallStateEvent) else None)

    async def client() -> list[str]:
        from aiortc import RTCConfiguration, RTCPeerConnection
        from aiortc.contrib.media import MediaPlayer

        pcs = []
        for _ in range(2):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(MediaPlayer(str(speech_wav), loop=True).audio, direction="sendonly")
            assert (await offer_answer(server.url, "ada", pc)).status_code == 200
            pcs.append(pc)
            while not any(p.frames for p in list(peers.peers)):
                await asyncio.sleep(0.05)
        live = list(peers.peers)
        for pc in pcs:
            await pc.close()
        return [p.label for p in live]

    live = asyncio.run(client())
    assert len(live) == 1  # the first was ended when the second was answered
    wait_until(lambda: not peers.peers, "both connections to end")
    wait_until(lambda: len([e for e in states if e.state == "media-ended"]) == 2, "both media ends")
    assert [(e.state, e.data.get("reason")) for e in states][:3] == [
        ("media-connected", None), ("media-ended", "replaced by a newer connection of the same participant"),
        ("media-connected", None)]
    # The peer's close reaches the server as the connection's close or its track's end, whichever first.
    assert states[3].data.get("reason") in ("connection closed by the peer", "the peer's audio track ended")


# Chromium --------------------------------------------------------------------------------------------

WAIT_MS = 60_000  # a hang guard for each condition, never a timing assertion


@pytest.mark.slow
def test_chromium_join_page_speech_comes_back_as_the_participants_transcript(app, speech_wav):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    guid = "webrtc-chromium-1"
    register_tokens(app, {"tok-browser": grant_for(guid)})
    started: dict[str, httpx.Response] = {}
    starter = threading.Thread(target=lambda: started.setdefault("r", start_streaming(app, guid)))
    starter.start()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args(speech_wav))  # looped: Leave ends it
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{app.url}{WEBRTC_JOIN_PAGE_PATH}?token=not-a-token")  # refused: the page says why
            expect(page.get_by_role("alert")).to_contain_text("Join token invalid or expired", timeout=WAIT_MS)
            expect(page.locator("#state")).not_to_have_attribute("data-state", "connected")
            page.goto(f"{app.url}{WEBRTC_JOIN_PAGE_PATH}?token=tok-browser")
            expect(page.locator("#state")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
            expect(page.locator("#mic")).to_have_text("on")
            assert "token" not in page.url  # taken out of the address bar
            starter.join(HANG_GUARD_S)
            assert started["r"].status_code == 200, started["r"].text
            reader = EventsReader(app, guid)
            wait_until(lambda: len(reader.heard() & WORDS) >= len(WORDS) - 1, "the sentence's words as finals")
            page.get_by_role("button", name="Leave").click()
            expect(page.locator("#state")).to_have_attribute("data-state", "closed")
            reader.join()  # leaving closed the connection: the media ended
            # Joined again, and the server ends the connection (an attendee removed, an idle
            # timeout, a drain): the page lets go of the microphone, says it ended, offers the form.
            page.get_by_role("button", name="Join", exact=True).click()
            expect(page.locator("#state")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
            expect(page.locator("#mic")).to_have_text("on")
            expect(page.locator("#join-form")).to_be_hidden()
            peers = app.app.state.webrtc_peers
            assert app.run(peers.close("acme", NAMESPACE, guid, reason="attendee removed")) == 1
            expect(page.locator("#state")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
            expect(page.locator("#mic")).to_have_text("off")
            expect(page.get_by_role("alert")).to_contain_text("The connection ended")
            expect(page.locator("#join-form")).to_be_visible()
            expect(page.locator("#leave")).to_be_hidden()
            assert not errors, errors
        finally:
            browser.close()
    assert_attendee_transcripts(reader)
    assert len(media_ended(reader)) == 1 and reader.code == 1000, reader.states()


def test_join_page_is_served_with_its_script(start_app):
    server = start_app()
    r = httpx.get(server.url + WEBRTC_JOIN_PAGE_PATH + "?token=x")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/ui/join.js" in r.text and r.headers["referrer-policy"] == "no-referrer"
    js = httpx.get(server.url + "/ui/join.js")
    assert js.status_code == 200 and WEBRTC_OFFER_PATH in js.text


# Frames -> PCM ---------------------------------------------------------------------------------------


def _frame(samples: np.ndarray, pts: int, rate: int = 48000, layout: str = "stereo", fmt: str = "s16"):
    import fractions

    import av

    frame = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, pts, fractions.Fraction(1, rate)
    return frame


class FramesTrack:
    """The peer's side of aiortc's track: `frames` as fast as they are asked for (a sender ahead of
    real time), holding back from frame `hold` on until `more` is set; then the track ends."""

    kind = "audio"

    def __init__(self, frames: list, hold: int | None = None) -> None:
        self.frames, self.hold, self.taken = frames, hold, 0
        self.more = asyncio.Event()

    async def recv(self):
        from aiortc.mediastreams import MediaStreamError

        if self.taken == self.hold:
            await self.more.wait()
        if self.taken == len(self.frames):
            raise MediaStreamError
        self.taken += 1
        return self.frames[self.taken - 1]


class Recorded:  # the registry's side of MediaCall, recording what the peer hands it
    guid = "g"
    ended = False

    def __init__(self) -> None:
        self.got: list[tuple[str, int, int, int | None]] = []
        self.reasons: list[str] = []

    async def audio(self, track, pcm, rate, timestamp_ms=None) -> None:
        self.got.append((track, len(pcm), rate, timestamp_ms))

    async def end(self, reason: str) -> None:
        self.reasons.append(reason)


async def run_peer(call, track):
    """A peer whose connection is up, fed by `track`, until the track ends."""
    from callscribe.ingest.limits import UNLIMITED
    from callscribe.ingest.webrtc import PeerLimits, WebRtcPeer

    slot = UNLIMITED.take("x")
    assert not isinstance(slot, str)
    peer = WebRtcPeer(None, grant_for("g"), source="t", slot=slot, limits=PeerLimits(), on_done=lambda p: None)
    peer.call, peer._track = call, track
    peer._connected.set()
    task = asyncio.create_task(peer._run())
    return peer, task


STEREO = np.stack([np.full(960, 1000, np.int16), np.full(960, 3000, np.int16)], axis=1).reshape(1, -1)


def test_frames_are_mixed_to_mono_and_placed_on_the_rtp_clock():
    """What aiortc's decoders hand over (s16 stereo at 48 kHz for Opus): channels averaged; a jump of
    the RTP clock (lost packets) reaches the call as a timestamp, contiguous frames without one."""
    from callscribe.ingest.webrtc import mono_pcm

    left, right = np.full(960, 1000, np.int16), np.full(960, 3000, np.int16)
    assert mono_pcm(_frame(STEREO, 0)).tolist() == [2000] * 960
    assert mono_pcm(_frame(np.stack([left, right]), 0, fmt="s16p")).tolist() == [2000] * 960
    assert mono_pcm(_frame(left.reshape(1, -1), 0, layout="mono")).tolist() == [1000] * 960

    async def run() -> Recorded:
        first = 48000 * 7  # aiortc's clock starts where the first packet was; the timeline starts there
        call = Recorded()
        _, task = await run_peer(call, FramesTrack([_frame(STEREO, first + 960 * k) for k in (0, 1, 2, 5, 6)]))
        await asyncio.wait_for(task, HANG_GUARD_S)  # packets 3 and 4 (40 ms) lost
        return call

    call = asyncio.run(run())
    assert call.got == [("attendee-7", 960, 48000, None)] * 3 + [("attendee-7", 960, 48000, 100),
                                                                  ("attendee-7", 960, 48000, None)]
    assert call.reasons == ["the peer's audio track ended"]


def test_a_call_that_is_behind_never_stops_the_peer_being_read():
    """The call paces (its audio() waits while the engine is behind) and the peer sends faster than
    real time: every frame is still read off aiortc's track (whose queue has no bound), what the call
    cannot take beyond MAX_QUEUED_MS is dropped and counted, and the next frame queued after the drop
    says where it starts, so the track's timeline stays right."""
    from callscribe.ingest.webrtc import MAX_QUEUED_MS

    class Behind(Recorded):  # the engine is behind until `go`
        def __init__(self) -> None:
            super().__init__()
            self.go = asyncio.Event()

        async def audio(self, track, pcm, rate, timestamp_ms=None) -> None:
            await super().audio(track, pcm, rate, timestamp_ms)
            await self.go.wait()

    burst = 500  # 10 s of 20 ms frames, sent at once

    async def run():
        call = Behind()
        track = FramesTrack([_frame(STEREO, 960 * k) for k in range(burst + 1)], hold=burst)
        peer, task = await run_peer(call, track)

        async def read_all() -> None:
            while track.taken < burst:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(read_all(), HANG_GUARD_S)  # read while the call holds the first frame
        queued = len(peer._queue)
        call.go.set()
        while peer._queue:
            await asyncio.sleep(0.01)
        track.more.set()  # one more frame, then the track ends
        await asyncio.wait_for(task, HANG_GUARD_S)
        return call, peer, queued

    call, peer, queued = asyncio.run(run())
    assert queued * 20 <= MAX_QUEUED_MS and peer.dropped_frames > 0
    assert peer.frames + peer.dropped_frames == burst + 1 and peer.dropped_ms == 20 * peer.dropped_frames
    assert len(call.got) == peer.frames
    assert all(t is None for *_, t in call.got[:-1])  # contiguous, up to the drop
    assert call.got[-1] == ("attendee-7", 960, 48000, 20 * burst)  # after the gap, where it belongs
    assert call.reasons == ["the peer's audio track ended"]
