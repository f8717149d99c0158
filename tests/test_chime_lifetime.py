"""A Chime meeting's life beyond the API calls: it ends itself without media (as Chime's do), and an
attendee whose media could not be transcribed (the model not ready) is joined once it can be."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import pytest
import websockets
from chime_helpers import KEY, SECRET, TENANT, Subscriber, chime_client
from servers import running_app, wait_until

from callscribe.config import load_settings
from callscribe.testing.speech import say, silence


def test_a_meeting_nobody_joins_ends_itself(tmp_path, engine):
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}",
                             chime_meeting_idle_s=1)
    with running_app(settings, engine=engine) as server:
        chime = chime_client(server)
        meeting = chime.create_meeting(ClientRequestToken="idle-1", MediaRegion="us-east-1",
                                       ExternalMeetingId="empty")["Meeting"]
        sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
        assert sub.opened.wait(30)
        assert sub.closed.wait(30) and (sub.close_reason or "").startswith("meeting ended")
        with pytest.raises(chime.exceptions.NotFoundException):
            chime.get_meeting(MeetingId=meeting["MeetingId"])


def test_an_attendee_is_transcribed_once_the_model_is_ready(tmp_path, engine):
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}")
    with running_app(settings, engine=engine) as server:
        chime = chime_client(server)
        meeting = chime.create_meeting(ClientRequestToken="ready-1", MediaRegion="us-east-1",
                                       ExternalMeetingId="early")["Meeting"]
        mid = meeting["MeetingId"]
        attendee = chime.create_attendee(MeetingId=mid, ExternalUserId="early-bird")["Attendee"]
        sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
        assert sub.opened.wait(30)
        chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration={
            "EngineTranscribeSettings": {"LanguageCode": "en-US"}})
        wait_until(lambda: sub.statuses() == ["started"], "started")
        ready = server.services.ready
        server.loop.call_soon_threadsafe(ready.clear)  # as while the model loads after a restart
        wait_until(lambda: not ready.is_set(), "the model 'unloaded'")
        url = f"{meeting['MediaPlacement']['AudioHostUrl']}?token={quote(attendee['JoinToken'])}&sample_rate=16000"
        speech = say("Can everyone hear me now that the model has loaded?", "joe")
        data = silence(0.5).astype("<i2").tobytes() + speech.astype("<i2").tobytes() + silence(1.5).astype("<i2").tobytes()

        async def attend() -> None:
            quiet = bytes(3200)  # 100 ms
            deadline = time.monotonic() + 60  # a guard against a hang, not a timing
            async with websockets.connect(url) as ws:
                while "interrupted" not in sub.statuses() and time.monotonic() < deadline:
                    await ws.send(quiet)
                    await asyncio.sleep(0.05)
                server.loop.call_soon_threadsafe(ready.set)
                while "resumed" not in sub.statuses() and time.monotonic() < deadline:
                    await ws.send(quiet)
                    await asyncio.sleep(0.05)
                for k in range(0, len(data), 3200):
                    await ws.send(data[k:k + 3200])
                    await asyncio.sleep(0.05)
                await ws.send('{"type": "stop"}')
                await ws.wait_closed()

        asyncio.run(attend())
        assert sub.statuses()[:3] == ["started", "interrupted", "resumed"]
        wait_until(lambda: "model" in sub.text_of(attendee["AttendeeId"]), "the attendee's final")
        chime.delete_meeting(MeetingId=mid)
        assert sub.closed.wait(30)
