"""A Chime-style meeting end to end, driven by boto3's real `chime-sdk-meetings` client: two attendees
stream synthesised speech over the attendee PCM socket, a subscriber of the meeting socket gets
partials and finals in the JS SDK's TranscriptEvent shapes attributed to the right attendee, and
the lifecycle goes to the webhook in the EventBridge shape; stop, start again, DeleteMeeting."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from callscribe.config import load_settings
from callscribe.testing.speech import say, silence
from chime_helpers import KEY, SECRET, TENANT, Subscriber, chime_client, stream_pcm
from e2e_helpers import WebhookReceiver
from servers import running_app, wait_until

ANN = "Good morning everyone, thanks for joining the planning meeting today."
BOB = "The budget review is scheduled for next Tuesday afternoon."
AGAIN = "We will meet again on Friday to look at the travel plans."
ENGLISH = {"EngineTranscribeSettings": {"LanguageCode": "en-US", "EnablePartialResultsStabilization": True,
                                        "PartialResultsStability": "medium"}}


def padded(text: str, voice: str) -> np.ndarray:
    return np.concatenate([silence(0.5), say(text, voice), silence(1.5)])


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def test_meeting_with_two_attendees_end_to_end(tmp_path, engine, webhook):
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}",
                             webhook_url=webhook.url)
    with running_app(settings, engine=engine) as server:
        chime = chime_client(server)
        meeting = chime.create_meeting(ClientRequestToken="e2e-1", MediaRegion="us-east-1",
                                       ExternalMeetingId="planning")["Meeting"]
        mid = meeting["MeetingId"]
        made = chime.batch_create_attendee(MeetingId=mid, Attendees=[{"ExternalUserId": "ann-ext"},
                                                                    {"ExternalUserId": "bob-ext"}])
        assert made["Errors"] == []
        ann, bob = made["Attendees"]
        pcm_url = meeting["MediaPlacement"]["AudioHostUrl"]

        def url_of(attendee: dict) -> str:
            return f"{pcm_url}?token={quote(attendee['JoinToken'])}&sample_rate=16000"

        # A subscriber with the API key, before transcription starts: it sees the whole lifecycle.
        sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
        assert sub.opened.wait(30) and not sub.closed.is_set()
        chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration=ENGLISH)
        wait_until(lambda: sub.statuses() == ["started"], "the started status")

        async def both() -> None:
            await asyncio.gather(stream_pcm(url_of(ann), padded(ANN, "joe")),
                                 stream_pcm(url_of(bob), padded(BOB, "joe-high")))

        asyncio.run(both())
        wait_until(lambda: "planning" in sub.text_of(ann["AttendeeId"]) and "budget" in sub.text_of(bob["AttendeeId"]),
                   "finals of both attendees")

        results = sub.results()
        partials = [r for r in results if r["isPartial"]]
        assert partials, "partials are sent"
        finals = sub.finals()
        final_ids = {r["resultId"] for r in finals}
        assert {r["resultId"] for r in partials} & final_ids, "a partial keeps its resultId until its final"
        for r in results:
            alt = r["alternatives"][0]
            assert r["startTimeMs"] > 1_600_000_000_000 and r["endTimeMs"] >= r["startTimeMs"]  # epoch ms
            assert alt["transcript"] and alt["items"]
            who = {(i["attendee"]["attendeeId"], i["attendee"]["externalUserId"]) for i in alt["items"]}
            assert who in ({(ann["AttendeeId"], "ann-ext")}, {(bob["AttendeeId"], "bob-ext")}), who
            assert all(i["type"] in ("pronunciation", "punctuation") and "stable" in i for i in alt["items"])
            if not r["isPartial"]:
                assert all(i["stable"] for i in alt["items"])
        assert "budget" not in sub.text_of(ann["AttendeeId"]) and "planning" not in sub.text_of(bob["AttendeeId"])

        # Stop: the last finals come before the stopped status; then start again and speak again.
        chime.stop_meeting_transcription(MeetingId=mid)
        wait_until(lambda: sub.statuses() == ["started", "stopped"], "the stopped status")
        chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration=ENGLISH)
        wait_until(lambda: sub.statuses() == ["started", "stopped", "started"], "started again")
        asyncio.run(stream_pcm(url_of(ann), padded(AGAIN, "joe")))
        wait_until(lambda: "friday" in sub.text_of(ann["AttendeeId"]), "a final after the restart")

        # DeleteMeeting ends everything: transcription stops, the socket closes, tokens stop working.
        chime.delete_meeting(MeetingId=mid)
        assert sub.closed.wait(30)
        assert sub.statuses() == ["started", "stopped", "started", "stopped"]
        assert server.run(server.services.media_grants.resolve(ann["JoinToken"])) is None
        # Nothing of the meeting reads live in the call list once it is deleted.
        calls = lambda: httpx.get(server.url + "/v1/calls", headers={"Authorization": f"Bearer {KEY}:{SECRET}"}).json()["calls"]
        wait_until(lambda: all(c["endedAt"] for c in calls() if mid in c["guid"]), "the meeting's records ended")

        hooks = wait_until(lambda: len([b for b in list(webhook.bodies) if b.get("source") == "aws.chime"]) >= 4
                           and [b for b in list(webhook.bodies) if b.get("source") == "aws.chime"], "lifecycle webhooks")
        kinds = [b["detail"]["eventType"] for b in hooks]
        assert kinds == ["chime:TranscriptionStarted", "chime:TranscriptionStopped",
                         "chime:TranscriptionStarted", "chime:TranscriptionStopped"]
        first = hooks[0]
        assert first["detail-type"] == "Chime Meeting State Change"
        assert first["detail"]["meetingId"] == mid and first["detail"]["externalMeetingId"] == "planning"
        assert '"LanguageCode":"en-US"' in first["detail"]["transcriptionConfiguration"]
