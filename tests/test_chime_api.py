"""The Chime SDK meetings REST surface as boto3's real client sees it: shapes, validation from the
service model, the documented exceptions, SigV4 checks, tenants, and what survives a restart."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import botocore.exceptions
import numpy as np
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from callscribe.config import load_settings
from callscribe.testing.speech import say, silence
from chime_helpers import KEY, SECRET, TENANT, Subscriber, chime_client, stream_pcm
from e2e_helpers import WebhookReceiver
from servers import running_app, wait_until

GUID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("chime"), sip_port=0,
                             api_keys=f"{KEY}:{SECRET}:{TENANT},kb:sb:other")
    with running_app(settings, engine=engine) as served:
        yield served


@pytest.fixture
def chime(server):
    return chime_client(server)


@pytest.fixture
def meeting(chime):
    import uuid

    return chime.create_meeting(ClientRequestToken=uuid.uuid4().hex, MediaRegion="us-east-1",
                                ExternalMeetingId="ext-meeting")["Meeting"]


def error_of(call) -> tuple[str, int, dict]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response


def test_meeting_and_attendee_shapes(chime, meeting):
    mid = meeting["MeetingId"]
    assert meeting["ExternalMeetingId"] == "ext-meeting" and meeting["MediaRegion"] == "us-east-1"
    assert meeting["MeetingArn"].endswith(f":meeting/{mid}")
    assert meeting["MediaPlacement"]["AudioHostUrl"].startswith("ws://")
    assert meeting["MediaPlacement"]["AudioFallbackUrl"].endswith("/v1/media/webrtc")
    assert chime.get_meeting(MeetingId=mid)["Meeting"] == meeting
    one = chime.create_attendee(MeetingId=mid, ExternalUserId="user-one")["Attendee"]
    assert one["ExternalUserId"] == "user-one" and len(one["JoinToken"]) > 20
    assert one["Capabilities"] == {"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"}
    assert chime.create_attendee(MeetingId=mid, ExternalUserId="user-one")["Attendee"] == one  # same user, same attendee
    batch = chime.batch_create_attendee(MeetingId=mid, Attendees=[{"ExternalUserId": f"user-{i}"} for i in range(5)])
    assert len(batch["Attendees"]) == 5 and batch["Errors"] == []
    assert chime.get_attendee(MeetingId=mid, AttendeeId=one["AttendeeId"])["Attendee"] == one
    seen, token = [], None
    while True:
        page = chime.list_attendees(MeetingId=mid, MaxResults=2, **({"NextToken": token} if token else {}))
        seen += page["Attendees"]
        token = page.get("NextToken")
        if not token:
            break
    assert len(seen) == 6 and len({a["AttendeeId"] for a in seen}) == 6
    # The attendee a NextToken names is deleted before the next page: the listing goes on after it.
    page = chime.list_attendees(MeetingId=mid, MaxResults=2)
    chime.delete_attendee(MeetingId=mid, AttendeeId=page["NextToken"])
    rest = chime.list_attendees(MeetingId=mid, NextToken=page["NextToken"])["Attendees"]
    assert [a["AttendeeId"] for a in rest] == sorted(a["AttendeeId"] for a in seen)[2:]
    with pytest.raises(chime.exceptions.BadRequestException):
        chime.list_attendees(MeetingId=mid, NextToken="not-a-token")
    if one["AttendeeId"] != page["NextToken"]:
        chime.delete_attendee(MeetingId=mid, AttendeeId=one["AttendeeId"])
    code, status, _ = error_of(lambda: chime.get_attendee(MeetingId=mid, AttendeeId=one["AttendeeId"]))
    assert (code, status) == ("NotFoundException", 404)
    # The idempotency token: a retried CreateMeeting gets the same meeting.
    again = chime.create_meeting(ClientRequestToken="same-token", MediaRegion="eu-west-1", ExternalMeetingId="x1")
    assert chime.create_meeting(ClientRequestToken="same-token", MediaRegion="eu-west-1",
                                ExternalMeetingId="x1")["Meeting"]["MeetingId"] == again["Meeting"]["MeetingId"]


def test_documented_exceptions(chime, meeting, server):
    mid = meeting["MeetingId"]
    code, status, response = error_of(lambda: chime.get_meeting(MeetingId="not-a-guid"))
    assert (code, status) == ("BadRequestException", 400) and "meetingId" in response["Error"]["Message"]
    assert len(response["RequestId"]) == 36  # the modelled error's members, parsed by botocore
    with pytest.raises(chime.exceptions.NotFoundException):
        chime.get_meeting(MeetingId=GUID)
    with pytest.raises(chime.exceptions.NotFoundException):
        chime.start_meeting_transcription(MeetingId=GUID, TranscriptionConfiguration={
            "EngineTranscribeSettings": {"LanguageCode": "en-US"}})
    with pytest.raises(chime.exceptions.BadRequestException):
        chime.stop_meeting_transcription(MeetingId="abc")
    with pytest.raises(chime.exceptions.BadRequestException):
        chime.create_meeting(ClientRequestToken="bad token!", MediaRegion="us-east-1", ExternalMeetingId="ext")
    bad = [
        {"EngineTranscribeMedicalSettings": {"LanguageCode": "en-US", "Specialty": "PRIMARYCARE", "Type": "DICTATION"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "ContentIdentificationType": "PII",
                                      "ContentRedactionType": "PII"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "PiiEntityTypes": "SSN"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "ContentRedactionType": "PII", "PiiEntityTypes": "SSN,FOO"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "IdentifyLanguage": True, "LanguageOptions": "en-US,de-DE"}},
        {"EngineTranscribeSettings": {"IdentifyLanguage": True, "LanguageOptions": "en-US"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "PartialResultsStability": "high"}},
        {"EngineTranscribeSettings": {"LanguageCode": "xx-XX"}},
        {"EngineTranscribeSettings": {"LanguageCode": "en-US", "PiiEntityTypes": "lower"}},
        {"EngineTranscribeSettings": {}},
        {},
    ]
    for config in bad:
        with pytest.raises(chime.exceptions.BadRequestException):
            chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration=config)
    # Another tenant's key cannot see the meeting.
    with pytest.raises(chime.exceptions.NotFoundException):
        chime_client(server, "kb", "sb").get_meeting(MeetingId=mid)


def test_signatures_are_verified(server, meeting):
    mid = meeting["MeetingId"]
    with pytest.raises(chime_client(server).exceptions.ForbiddenException):
        chime_client(server, KEY, "wrong-secret").get_meeting(MeetingId=mid)
    with pytest.raises(chime_client(server).exceptions.ForbiddenException):
        chime_client(server, "nobody", SECRET).get_meeting(MeetingId=mid)
    unsigned = httpx.get(f"{server.url}/meetings/{mid}")
    assert unsigned.status_code == 401 and unsigned.json()["Code"] == "UnauthorizedException"
    assert set(unsigned.json()) == {"Code", "Message", "RequestId"}
    # The signature is checked before the input: an unsigned caller with a bad operation hears 401.
    for path in (f"/meetings/{mid}/transcription?operation=bogus", f"/meetings/{mid}/attendees?operation=bogus"):
        assert httpx.post(f"{server.url}{path}", content=b"{}").status_code == 401

    # A body changed after signing no longer matches its signature.
    url = f"{server.url}/meetings"
    body = json.dumps({"ClientRequestToken": "tamper-1", "MediaRegion": "us-east-1", "ExternalMeetingId": "ext"})
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY, SECRET), "chime", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    tampered = httpx.post(url, content=body.replace("ext", "exu"), headers=headers)
    assert tampered.status_code == 403 and tampered.json()["Code"] == "ForbiddenException"
    # Signed for another service.
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY, SECRET), "s3", "us-east-1").add_auth(request)
    assert httpx.post(url, content=body, headers=dict(request.headers.items())).status_code == 403


def test_unserved_language_fails_after_the_call_succeeds(server, chime, meeting):
    mid = meeting["MeetingId"]
    sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
    assert sub.opened.wait(30) and not sub.closed.is_set()
    chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration={
        "EngineTranscribeSettings": {"LanguageCode": "de-DE"}})
    frames = wait_until(lambda: [f for f in sub.frames if "status" in f], "a status")
    status = frames[0]["status"]
    assert status["type"] == "failed" and "de-DE" in status["message"]
    assert json.loads(status["transcriptionConfiguration"]) == {"EngineTranscribeSettings": {"LanguageCode": "de-DE"}}
    chime.delete_meeting(MeetingId=mid)
    assert sub.closed.wait(30)


@pytest.mark.parametrize("setting", [{"VocabularyName": "medical-terms"}, {"LanguageModelName": "my-model"},
                                     {"VocabularyFilterName": "swears", "VocabularyFilterMethod": "mask"}])
def test_custom_vocabularies_and_models_fail_rather_than_being_ignored(server, chime, meeting, setting):
    mid = meeting["MeetingId"]
    sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], {"Authorization": f"Bearer {KEY}:{SECRET}"})
    assert sub.opened.wait(30) and not sub.closed.is_set()
    chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration={
        "EngineTranscribeSettings": {"LanguageCode": "en-US", **setting}})
    status = wait_until(lambda: [f for f in sub.frames if "status" in f], "a status")[0]["status"]
    assert status["type"] == "failed" and all(name in status["message"] for name in setting), status
    assert server.app.state.chime_meetings.get(TENANT, mid).transcription is None
    chime.delete_meeting(MeetingId=mid)
    assert sub.closed.wait(30)


def test_join_tokens_and_the_meeting_socket_refuse_strangers(server, chime, meeting):
    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    mid = meeting["MeetingId"]
    attendee = chime.create_attendee(MeetingId=mid, ExternalUserId="listener")["Attendee"]
    grant = server.run(server.services.media_grants.resolve(attendee["JoinToken"]))
    assert (grant.tenant, grant.namespace, grant.guid, grant.participant.id, grant.participant.role,
            grant.participant.external_id) == (TENANT, "chime", mid, attendee["AttendeeId"], "attendee", "listener")
    events = meeting["MediaPlacement"]["SignalingUrl"]
    for url in (events, f"{events}?token=nope", meeting["MediaPlacement"]["AudioHostUrl"] + "?token=nope"):
        with pytest.raises(InvalidStatus) as info:
            ws_client.connect(url, open_timeout=30)
        assert info.value.response.status_code in (401, 403)
    with ws_client.connect(f"{events}?token={attendee['JoinToken']}", open_timeout=30):
        pass
    # A deleted attendee's meeting socket is closed (it would otherwise keep receiving transcripts);
    # a subscriber with the API key stays.
    sub = Subscriber(f"{events}?token={quote(attendee['JoinToken'])}")
    keyed = Subscriber(events, {"Authorization": f"Bearer {KEY}:{SECRET}"})
    assert sub.opened.wait(30) and keyed.opened.wait(30) and not sub.closed.is_set()
    chime.delete_attendee(MeetingId=mid, AttendeeId=attendee["AttendeeId"])
    assert sub.closed.wait(30) and sub.close_reason == "attendee deleted"
    assert not keyed.closed.wait(0.5)
    assert server.run(server.services.media_grants.resolve(attendee["JoinToken"])) is None


def test_a_socket_that_does_not_read_is_closed_and_others_see_only_their_meeting(server, chime, meeting, monkeypatch):
    from callscribe.api import chime_ws

    monkeypatch.setattr(chime_ws, "QUEUE_MAX", 4)
    mid = meeting["MeetingId"]
    other = chime.create_meeting(ClientRequestToken="quiet-neighbour", MediaRegion="us-east-1",
                                 ExternalMeetingId="other")["Meeting"]
    bearer = {"Authorization": f"Bearer {KEY}:{SECRET}"}
    busy, quiet = Subscriber(meeting["MediaPlacement"]["SignalingUrl"], bearer), \
        Subscriber(other["MediaPlacement"]["SignalingUrl"], bearer)
    assert busy.opened.wait(30) and quiet.opened.wait(30)
    before = server.services.connections.snapshot()["open"]
    book = server.app.state.chime_meetings

    async def burst() -> None:  # more events at once than the socket's queue holds
        m = book.get(TENANT, mid)
        for _ in range(20):
            book._lifecycle(m, "interrupted", "burst")

    server.run(burst())
    assert busy.closed.wait(30) and busy.close_reason == "events are not read fast enough"
    assert not quiet.closed.is_set() and quiet.frames == []  # another meeting's events never reach it
    wait_until(lambda: server.services.connections.snapshot()["open"] == before - 1, "the slot released")
    chime.delete_meeting(MeetingId=other["MeetingId"])
    assert quiet.closed.wait(30)


def second_port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_meetings_survive_a_restart(tmp_path, engine):
    webhook = WebhookReceiver()
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}",
                             webhook_url=webhook.url)
    with running_app(settings, engine=engine) as first:
        first_port = second_port(first)
        chime = chime_client(first)
        meeting = chime.create_meeting(ClientRequestToken="restart-1", MediaRegion="us-east-1",
                                       ExternalMeetingId="kept")["Meeting"]
        attendee = chime.create_attendee(MeetingId=meeting["MeetingId"], ExternalUserId="kept-user")["Attendee"]
        chime.start_meeting_transcription(MeetingId=meeting["MeetingId"], TranscriptionConfiguration={
            "EngineTranscribeSettings": {"LanguageCode": "en-US"}})
    assert oct((tmp_path / "chime-meetings.json").stat().st_mode & 0o777) == "0o600"
    with running_app(settings, engine=engine) as second:
        chime = chime_client(second)
        assert chime.get_meeting(MeetingId=meeting["MeetingId"])["Meeting"]["ExternalMeetingId"] == "kept"
        assert chime.list_attendees(MeetingId=meeting["MeetingId"])["Attendees"] == [attendee]
        grant = second.run(second.services.media_grants.resolve(attendee["JoinToken"]))
        assert grant is not None and grant.participant.id == attendee["AttendeeId"]
        book = second.app.state.chime_meetings
        kept = book.get(TENANT, meeting["MeetingId"])
        assert kept.transcription is not None and kept.interrupted  # TranscriptionInterrupted until media returns
        # The attendee reconnects: transcription resumes without a new start.
        sub = Subscriber(meeting["MediaPlacement"]["SignalingUrl"].replace(str(first_port), str(second_port(second))),
                         {"Authorization": f"Bearer {KEY}:{SECRET}"})
        assert sub.opened.wait(30) and not sub.closed.is_set()
        audio = np.concatenate([silence(0.5), say("Sorry, I lost my connection for a moment.", "joe"), silence(1.5)])
        url = f"{second.ws_url}/chime/v1/attendee-audio?token={quote(attendee['JoinToken'])}"
        asyncio.run(stream_pcm(url, audio))
        wait_until(lambda: "connection" in sub.text_of(attendee["AttendeeId"]), "a final after the restart")
        assert sub.statuses()[0] == "resumed"
    hooks = [b["detail"]["eventType"] for b in list(webhook.bodies) if b.get("source") == "aws.chime"]
    assert hooks[:1] == ["chime:TranscriptionStarted"]


def test_deleting_an_attendee_ends_its_audio(server, chime, meeting):
    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    mid = meeting["MeetingId"]
    attendee = chime.create_attendee(MeetingId=mid, ExternalUserId="leaver")["Attendee"]
    url = f"{meeting['MediaPlacement']['AudioHostUrl']}?token={quote(attendee['JoinToken'])}&sample_rate=8000"
    with ws_client.connect(url, open_timeout=30) as ws:
        ws.send(bytes(1600))
        call = wait_until(lambda: server.services.registry.get_call(TENANT, mid, "chime"), "the meeting's call")
        assert [t["name"] for t in call["tracks"]] == [attendee["AttendeeId"]]
        with pytest.raises(InvalidStatus) as info:  # one audio connection per attendee
            ws_client.connect(url, open_timeout=30)
        assert info.value.response.status_code == 409
        chime.delete_attendee(MeetingId=mid, AttendeeId=attendee["AttendeeId"])
        with pytest.raises(Exception):
            while True:
                ws.recv(timeout=30)
        assert ws.close_reason == "attendee deleted"
    assert server.services.registry.get_call(TENANT, mid, "chime")["media"] == "ended"


def test_an_attendee_deleted_while_its_audio_connects_is_refused(server, chime, meeting, monkeypatch):
    """DeleteAttendee between the token check and the media's connection finds no media to end: the
    socket checks the token again once its media is connected, and ends it."""
    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    mid = meeting["MeetingId"]
    attendee = chime.create_attendee(MeetingId=mid, ExternalUserId="late-leaver")["Attendee"]
    registry, book = server.services.registry, server.app.state.chime_meetings
    connect = registry.media_connected

    async def deleted_meanwhile(**kwargs):
        await book.delete_attendee(book.get(TENANT, mid), attendee["AttendeeId"])
        return await connect(**kwargs)

    monkeypatch.setattr(registry, "media_connected", deleted_meanwhile)
    url = f"{meeting['MediaPlacement']['AudioHostUrl']}?token={quote(attendee['JoinToken'])}"
    with pytest.raises(InvalidStatus) as info:
        ws_client.connect(url, open_timeout=30)
    assert info.value.response.status_code == 403
    call = registry.get_call(TENANT, mid, "chime")
    assert call["media"] == "ended", call


def test_a_socket_that_fails_before_it_opens_gives_back_its_connection_slot(server, chime, meeting, monkeypatch):
    """The connection slot is released whatever happens before the session runs (the media failing
    to connect, the client leaving before the upgrade is accepted)."""
    import websockets.sync.client as ws_client

    attendee = chime.create_attendee(MeetingId=meeting["MeetingId"], ExternalUserId="unlucky")["Attendee"]
    limits = server.services.connections
    before = limits.snapshot()["open"]

    async def broken(**kwargs):
        raise RuntimeError("the registry failed")

    monkeypatch.setattr(server.services.registry, "media_connected", broken)
    url = f"{meeting['MediaPlacement']['AudioHostUrl']}?token={quote(attendee['JoinToken'])}"
    with pytest.raises(Exception):
        ws_client.connect(url, open_timeout=30)
    wait_until(lambda: limits.snapshot()["open"] == before, "the slot to be given back")
