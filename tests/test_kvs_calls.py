"""Amazon Connect calls end to end: the ASAPP start-streaming API starts a Kinesis Video pull that the
real boto3 client makes against a local Kinesis Video endpoint (tests/kvs_fixtures.py, reached through
the standard AWS_ENDPOINT_URL_KINESIS_VIDEO* settings), serving chunked Matroska in Connect's exact
layout; the real app and speech model transcribe it; transcripts are read back from the webhook and
from GET messages.

The two sides are synthesised with two different voices and go through telephone mu-law (sox) to
8 kHz PCM, the way Connect writes them. Track numbers are swapped (1 = AUDIO_TO_CUSTOMER) as in
real fixtures, so roles can only come from the track names.
"""

from __future__ import annotations

import re
import uuid

import httpx
import numpy as np
import pytest

from callscribe.config import load_settings
from callscribe.testing import speech
from e2e_helpers import WebhookReceiver
from test_twilio_calls import AGENT_WORDS, CUSTOMER_WORDS, SCRIPT, assert_roles, by_role, webhook_roles
from kvs_fixtures import Fragment, KinesisVideoEndpoint, aws_env, fragments_of, stream_arn
from servers import running_app, wait_until

pytestmark = pytest.mark.slow

HEADERS = {"asapp-api-id": "ac", "asapp-api-secret": "ac-secret"}
HANG_GUARD_S = 120.0  # stops a broken test from hanging; never a timing assertion
NEXT_CONTACT = [("customer", "Pineapple bananas and strawberries are ripe."),
                ("agent", "Purple elephants dance on the trampoline.")]
NEXT_WORDS = {"pineapple", "bananas", "strawberries", "purple", "elephants", "trampoline"}
SWAPPED = {"AUDIO_TO_CUSTOMER": 1, "AUDIO_FROM_CUSTOMER": 2}


# Peers and fixtures -----------------------------------------------------------------------------


def connect_tracks(script: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    call = speech.build_call(script, gap_s=1.5, voices=speech.VOICES)
    pcm = {role: speech.mulaw_to_pcm16(speech.telephony(call.tracks[role])) for role in ("customer", "agent")}
    return {"AUDIO_FROM_CUSTOMER": pcm["customer"], "AUDIO_TO_CUSTOMER": pcm["agent"]}


@pytest.fixture(scope="module")
def tracks() -> dict[str, np.ndarray]:
    return connect_tracks(SCRIPT)


def call_fragments(tracks: dict[str, np.ndarray], contact: str, **kw) -> list[Fragment]:
    frags = fragments_of(tracks, contact_id=contact, **kw)
    for f in frags:
        f.track_numbers = dict(SWAPPED)
    return frags


@pytest.fixture(scope="module")
def app(engine, tmp_path_factory):
    """The app and the receiver of its webhooks (`app.webhook`)."""
    receiver = WebhookReceiver()
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ac:ac-secret:acme",
                             webhook_url=receiver.url, kvs_start_timeout_s=5, kvs_idle_timeout_s=3,
                             kvs_read_timeout_s=2)
    try:
        with running_app(settings, engine=engine) as server:
            server.webhook = receiver
            yield server
    finally:
        receiver.close()


@pytest.fixture
def webhook(app) -> WebhookReceiver:
    return app.webhook


@pytest.fixture
def kvs(monkeypatch):
    endpoints: list[KinesisVideoEndpoint] = []

    def make(streams: dict, **kw) -> KinesisVideoEndpoint:
        endpoint = KinesisVideoEndpoint(streams, **kw)
        aws_env(monkeypatch, endpoint)
        endpoints.append(endpoint)
        return endpoint

    yield make
    for e in endpoints:
        e.close()


def control(server, op: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/mg-autotranscribe/v1/{op}", json=body, headers=HEADERS, timeout=HANG_GUARD_S)


def start_body(guid: str, arn: str, **params) -> dict:
    return {"namespace": "amazonconnect", "guid": guid, "customerId": "cust-1", "agentId": "agent-1",
            "amazonConnectParams": {"streamArn": arn, **params}}


def call_view(server, guid: str) -> dict | None:
    async def get() -> dict | None:
        return server.services.registry.get_call("acme", guid, "amazonconnect")

    return server.run(get())


def ended_reason(server, guid: str) -> str | None:
    view = call_view(server, guid)
    if view is None or view["media"] != "ended":
        return None
    return next(e["data"]["reason"] for e in view["protocol_events"] if e["name"] == "kvs-ended")


def received_ms(server, guid: str) -> dict[str, int]:
    return {t["name"]: t["received_ms"] for t in call_view(server, guid)["tracks"]}


def message_roles(server, guid: str) -> dict[str, set[str]]:
    r = httpx.get(f"{server.url}/conversation/v1/conversation/messages", params={"externalId": guid}, headers=HEADERS)
    assert r.status_code == 200, r.text
    return by_role([(item["sender"]["role"], item["text"]) for item in r.json()["items"]])


def duration_ms(frags: list[Fragment], name: str) -> int:
    return sum(len(f.audio.get(name, ())) for f in frags) * 1000 // 8000


def finish(app, guid: str) -> dict:
    """Wait for the pull to end the media, then stop-streaming: the interval the end closed."""
    wait_until(lambda: ended_reason(app, guid), "the pull to end")
    r = control(app, "stop-streaming", {"namespace": "amazonconnect", "guid": guid})
    assert r.status_code == 200, r.text
    return r.json()["autotranscribeResponse"]


# Tests -----------------------------------------------------------------------------------------------


def test_two_voices_land_on_their_roles(app, webhook, kvs, tracks):
    """FRAGMENT_NUMBER start; every fragment delivered once; right words on the right roles."""
    guid = str(uuid.uuid4())
    arn = stream_arn("connect-contact-roles")
    frags = call_fragments(tracks, guid)
    endpoint = kvs({arn: frags})
    r = control(app, "start-streaming", start_body(guid, arn, startSelectorType="FRAGMENT_NUMBER",
                                                   afterFragmentNumber=str(int(frags[0].number) - 1)))
    assert r.status_code == 200, r.text
    legs = r.json()["autotranscribeResponse"]
    assert set(legs) == {"customer", "agent"} and all(leg["status"]["code"] == 1000 for leg in legs.values())

    summaries = finish(app, guid)
    assert ended_reason(app, guid) == "inactive"
    assert endpoint.requests[0]["StartSelector"] == {"StartSelectorType": "FRAGMENT_NUMBER",
                                                     "AfterFragmentNumber": str(int(frags[0].number) - 1)}
    # later connections continue after the last fragment read, with its continuation token
    assert endpoint.requests[1]["StartSelector"] == {"StartSelectorType": "CONTINUATION_TOKEN",
                                                     "ContinuationToken": frags[-1].number}
    got = received_ms(app, guid)
    assert got == {name: duration_ms(frags, name) for name in tracks}, got
    assert summaries["customer"]["summary"]["audioDurationMs"] == duration_ms(frags, "AUDIO_FROM_CUSTOMER")
    app.flush()
    assert_roles(webhook_roles(webhook, guid))
    assert_roles(message_roles(app, guid))
    lag = re.search(r"^callscribe_kvs_millis_behind_now_seconds_count (\S+)$", httpx.get(app.url + "/metrics").text, re.M)
    assert lag and float(lag.group(1)) >= len(frags) - 1  # MILLIS_BEHIND_NOW of each fragment read
    for b in webhook.transcripts(guid):
        assert b["namespace"] == "amazonconnect"
        assert b["sender"]["externalId"] == {"customer": "cust-1", "agent": "agent-1"}[b["sender"]["role"]]


def test_stop_pauses_and_start_resumes_on_the_same_pull(app, webhook, kvs, tracks):
    """stop-streaming pauses: the pull goes on (audio counted, not transcribed); start resumes live."""
    guid = str(uuid.uuid4())
    arn = stream_arn("connect-contact-pause")
    frags = call_fragments(tracks, guid)
    endpoint = kvs({arn: frags}, speed=1.0)  # real time: the stop lands mid-call
    assert control(app, "start-streaming", start_body(guid, arn)).status_code == 200
    wait_until(lambda: webhook.transcripts(guid), "a first transcript")
    stop = control(app, "stop-streaming", {"namespace": "amazonconnect", "guid": guid})
    assert stop.status_code == 200, stop.text
    assert call_view(app, guid)["media"] == "connected"
    first_ids = {leg["streamId"] for leg in stop.json()["autotranscribeResponse"].values()}
    at_stop = received_ms(app, guid)["AUDIO_FROM_CUSTOMER"]
    wait_until(lambda: received_ms(app, guid)["AUDIO_FROM_CUSTOMER"] >= at_stop + 2000, "audio while stopped")
    again = control(app, "start-streaming", start_body(guid, arn))  # a live call: no second pull
    assert again.status_code == 200, again.text
    second_ids = {leg["streamId"] for leg in again.json()["autotranscribeResponse"].values()}
    assert not first_ids & second_ids
    last = finish(app, guid)
    assert received_ms(app, guid) == {name: duration_ms(frags, name) for name in tracks}
    transcribed = sum(r["customer"]["summary"]["audioDurationMs"] for r in (stop.json()["autotranscribeResponse"], last))
    assert 0 < transcribed < duration_ms(frags, "AUDIO_FROM_CUSTOMER")  # what came while stopped was dropped
    assert endpoint.requests[0]["StartSelector"] == {"StartSelectorType": "NOW"}
    assert all(r["StartSelector"]["StartSelectorType"] == "CONTINUATION_TOKEN" for r in endpoint.requests[1:])
    heard = webhook_roles(webhook, guid)
    assert not heard["customer"] & AGENT_WORDS and not heard["agent"] & CUSTOMER_WORDS, heard
    assert {b["streamId"] for b in webhook.transcripts(guid)} <= first_ids | second_ids


@pytest.fixture(scope="module")
def moto_kinesis():
    """moto's Kinesis Video control plane (CreateStream, GetDataEndpoint), served on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_dropped_connections_resume_without_loss_or_duplicates(app, webhook, kvs, tracks, moto_kinesis, monkeypatch):
    """Connections cut mid-fragment resume after the last whole fragment. The control plane is moto
    (its data endpoint is an AWS name); AWS_ENDPOINT_URL_KINESIS_VIDEO_MEDIA sends GetMedia here."""
    import boto3

    guid = str(uuid.uuid4())
    arn = boto3.client("kinesisvideo", region_name="us-east-1", endpoint_url=moto_kinesis,
                       aws_access_key_id="a", aws_secret_access_key="b").create_stream(
        StreamName=f"connect-contact-{guid}", DataRetentionInHours=24, MediaType="audio/L16")["StreamARN"]
    frags = call_fragments(tracks, guid)
    size = len(frags[0].to_bytes())
    endpoint = kvs({arn: frags}, cut_at=[int(size * 2.5), int(size * 1.3), 777])
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", moto_kinesis)  # kvs() pointed it at the fake
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO_MEDIA", endpoint.url)
    assert control(app, "start-streaming", start_body(guid, arn)).status_code == 200
    finish(app, guid)
    selectors = [r["StartSelector"] for r in endpoint.requests]
    assert len(selectors) >= 4, selectors
    assert selectors[1]["StartSelectorType"] in ("CONTINUATION_TOKEN", "FRAGMENT_NUMBER"), selectors
    assert received_ms(app, guid) == {name: duration_ms(frags, name) for name in tracks}
    app.flush()
    assert_roles(webhook_roles(webhook, guid))
    not_in_moto = control(app, "start-streaming", start_body(str(uuid.uuid4()), stream_arn("connect-contact-none")))
    assert not_in_moto.status_code == 400 and not_in_moto.json()["error"]["code"] == "400-201", not_in_moto.text


def test_contact_change_ends_the_pull(app, webhook, kvs, tracks):
    """Connect reuses the stream for the next contact: its audio never reaches this call."""
    guid = str(uuid.uuid4())
    arn = stream_arn("connect-contact-reused")
    ours = call_fragments(tracks, guid)
    end_ms = ours[-1].start_ms + 1000
    theirs = call_fragments(connect_tracks(NEXT_CONTACT), str(uuid.uuid4()),
                            first_number=int(ours[-1].number) + 7, start_ms=end_ms)
    kvs({arn: ours + theirs})
    assert control(app, "start-streaming", start_body(guid, arn)).status_code == 200
    finish(app, guid)
    assert ended_reason(app, guid) == "contact-changed"
    assert received_ms(app, guid) == {name: duration_ms(ours, name) for name in tracks}
    app.flush()
    heard = webhook_roles(webhook, guid)
    assert_roles(heard)
    assert not (heard["customer"] | heard["agent"]) & NEXT_WORDS, heard


def test_error_tag_ends_the_call_with_its_code(app, webhook, kvs, tracks):
    guid = str(uuid.uuid4())
    arn = stream_arn("connect-contact-error")
    frags = call_fragments(tracks, guid)[:4]
    error = Fragment("0", 0, {}, error=("4000", "FRAGMENT_NOT_FOUND"))
    kvs({arn: frags + [error]})
    assert control(app, "start-streaming", start_body(guid, arn)).status_code == 200
    legs = finish(app, guid)
    assert ended_reason(app, guid) == "kvs-error 4000 FRAGMENT_NOT_FOUND"
    for leg in legs.values():  # the error is the status of the legs it closed
        assert leg["status"] == {"code": 5000, "description": "media stream error: kvs-error 4000 FRAGMENT_NOT_FOUND"}
    assert received_ms(app, guid) == {name: duration_ms(frags, name) for name in tracks}


def test_start_refusals(app, kvs, tracks):
    """Each way a pull cannot start gets its ASAPP code, and leaves no call behind."""
    arn = stream_arn("connect-contact-known")
    gone = Fragment("1000", 0, {}, error=("4000", "FRAGMENT_NOT_FOUND"))
    kvs({arn: [], stream_arn("connect-contact-gone"): [gone], stream_arn("connect-contact-silent"): []})

    def start(guid: str, **params) -> httpx.Response:
        return control(app, "start-streaming", start_body(guid, **params))

    def code(r: httpx.Response) -> str:
        return r.json()["error"]["code"]

    malformed = start("g1", arn="arn:aws:kinesis:us-east-1:123456789012:stream/x")
    assert malformed.status_code == 400 and code(malformed) == "400-201", malformed.text
    no_after = start("g2", arn=arn, startSelectorType="FRAGMENT_NUMBER")
    assert no_after.status_code == 400 and code(no_after) == "400-202", no_after.text
    bad_after = start("g3", arn=arn, startSelectorType="FRAGMENT_NUMBER", afterFragmentNumber="12x")
    assert bad_after.status_code == 400 and code(bad_after) == "400-201", bad_after.text
    missing = start("g4", arn=stream_arn("connect-contact-nowhere"))  # ResourceNotFoundException
    assert missing.status_code == 400 and code(missing) == "400-201", missing.text
    assert "ResourceNotFoundException" in missing.json()["error"]["message"]
    gone = start("g6", arn=stream_arn("connect-contact-gone"), startSelectorType="FRAGMENT_NUMBER",
                 afterFragmentNumber="123")  # GetMedia's error tag: no such fragment
    assert gone.status_code == 400 and code(gone) == "400-201", gone.text
    assert "4000" in gone.json()["error"]["message"]
    silent = start("g5", arn=stream_arn("connect-contact-silent"))  # a stream with no Connect audio
    assert silent.status_code == 400 and code(silent) == "400-203", silent.text
    for guid in ("g1", "g2", "g3", "g4", "g5", "g6"):
        assert call_view(app, guid) is None


def test_unreachable_kinesis_is_an_internal_error(app, monkeypatch, tracks):
    """AWS unreachable: 500-201, which a client may retry (unlike a stream that cannot be read)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    endpoint = type("E", (), {"url": f"http://127.0.0.1:{port}"})()
    aws_env(monkeypatch, endpoint)
    r = control(app, "start-streaming", start_body("g-down", stream_arn("connect-contact-down")))
    assert r.status_code == 500 and r.json()["error"]["code"] == "500-201", r.text
