"""Chime attendees over WebRTC: boto3's real `chime-sdk-meetings` client makes a meeting and two
attendees; one joins through aiortc (a WebRTC client written by others), the other through the join
page in Debian's headless Chromium with a synthesised WAV as its microphone, each with nothing but
its JoinToken. The meeting socket's finals carry each attendee's words under that attendee;
DeleteAttendee ends the browser's connection; DeleteMeeting ends the rest. Nothing is timed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from callscribe.config import load_settings
from callscribe.testing.speech import SAMPLE_RATE, say, silence
from callscribe.testing.wav import write_wav
from callscribe.urls import WEBRTC_JOIN_PAGE_PATH
from chime_helpers import KEY, SECRET, TENANT, Subscriber, chime_client
from servers import running_app, wait_until
from webrtc_client import CHROMIUM, HANG_GUARD_S, chromium_args, require_host_address, send_file

pytestmark = pytest.mark.slow

ANN = "Good morning everyone, thanks for joining the planning meeting today."
BOB = "The budget review is scheduled for next Tuesday afternoon."
ENGLISH = {"EngineTranscribeSettings": {"LanguageCode": "en-US"}}
WAIT_MS = 60_000  # a hang guard for each browser condition


def wav_of(path: Path, text: str, voice: str) -> Path:
    write_wav(path, np.concatenate([silence(1.0), say(text, voice), silence(1.5)]), SAMPLE_RATE)
    return path


def test_attendees_over_webrtc_aiortc_and_chromium(tmp_path, engine):
    from playwright.sync_api import expect, sync_playwright

    require_host_address()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    ann_wav, bob_wav = wav_of(tmp_path / "ann.wav", ANN, "joe"), wav_of(tmp_path / "bob.wav", BOB, "joe-high")
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}")
    with running_app(settings, engine=engine) as server:
        chime = chime_client(server)
        meeting = chime.create_meeting(ClientRequestToken="webrtc-1", MediaRegion="us-east-1",
                                       ExternalMeetingId="webrtc")["Meeting"]
        mid = meeting["MeetingId"]
        ann, bob = chime.batch_create_attendee(MeetingId=mid, Attendees=[{"ExternalUserId": "ann-ext"},
                                                                        {"ExternalUserId": "bob-ext"}])["Attendees"]
        sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
        assert sub.opened.wait(30) and not sub.closed.is_set()
        chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration=ENGLISH)
        wait_until(lambda: sub.statuses() == ["started"], "the started status")

        # Ann: aiortc plays her sentence once, then closes its connection.
        sent: dict[str, object] = {}

        def ann_client() -> None:
            try:
                asyncio.run(send_file(server.url, ann["JoinToken"], ann_wav))
                sent["ok"] = True
            except BaseException as exc:  # reported by the assertion below
                sent["error"] = exc

        ann_thread = threading.Thread(target=ann_client)
        ann_thread.start()

        # Bob: the join page in Chromium, his sentence looped as the microphone until he is deleted.
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=chromium_args(bob_wav))
            try:
                page = browser.new_page()
                page.goto(f"{server.url}{WEBRTC_JOIN_PAGE_PATH}?token={quote(bob['JoinToken'], safe='')}")
                state = page.locator("#state")
                expect(state).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
                wait_until(lambda: "planning" in sub.text_of(ann["AttendeeId"])
                           and "budget" in sub.text_of(bob["AttendeeId"]), "finals of both attendees")
                # DeleteAttendee ends Bob's media; the server closes his connection and the page says so.
                chime.delete_attendee(MeetingId=mid, AttendeeId=bob["AttendeeId"])
                expect(state).not_to_have_attribute("data-state", "connected", timeout=WAIT_MS)
            finally:
                browser.close()

        ann_thread.join(HANG_GUARD_S)
        assert sent.get("ok"), sent
        for r in sub.finals():
            who = {i["attendee"]["attendeeId"] for i in r["alternatives"][0]["items"]}
            assert who in ({ann["AttendeeId"]}, {bob["AttendeeId"]}), r
        assert "budget" not in sub.text_of(ann["AttendeeId"]) and "planning" not in sub.text_of(bob["AttendeeId"])
        items = [i for r in sub.finals(bob["AttendeeId"]) for i in r["alternatives"][0]["items"]]
        assert {i["attendee"]["externalUserId"] for i in items} == {"bob-ext"}

        chime.delete_meeting(MeetingId=mid)
        assert sub.closed.wait(30)
        assert not server.app.state.webrtc_peers.peers
