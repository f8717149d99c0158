"""ASAPP media-gateway control (start/stop-streaming) against the running app: every error row.

Media is registered in-process through the registry (the media adapters have their own tests).
"""

from __future__ import annotations

import concurrent.futures
import json
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from callscribe.config import load_settings
from servers import running_app

START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"
ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
GLOBEX = {"asapp-api-id": "kb", "asapp-api-secret": "sb"}


def make_settings(tmp_path_factory, **kw):
    values = {"data_dir": tmp_path_factory.mktemp("data"), "sip_port": 0, "api_keys": "ka:sa:acme,kb:sb:globex",
              "start_wait_for_media_s": 0.3}
    values.update(kw)
    return load_settings(**values)


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    with running_app(make_settings(tmp_path_factory), engine=engine) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def connect(server, guid: str, tenant: str = "acme", namespace: str = "twilio", tracks=("inbound", "outbound")):
    return server.run(server.services.registry.media_connected(
        tenant=tenant, namespace=namespace, guid=guid, tracks=list(tracks), source="test"))


def body(guid: str, namespace: str = "twilio", **extra) -> dict:
    return {"namespace": namespace, "guid": guid, "customerId": "cust-1", "agentId": "agent-1", **extra}


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and uuid.UUID(err["requestId"])
    assert "Traceback" not in resp.text
    return err


def test_start_stop_shapes(server, client):
    guid = "CA" + uuid.uuid4().hex
    connect(server, guid)
    r = client.post(START, headers=ACME, json=body(guid))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["isOk"] is True
    legs = out["autotranscribeResponse"]
    assert set(legs) == {"customer", "agent"}
    for leg in legs.values():
        assert leg["status"] == {"code": 1000, "description": "OK"} and uuid.UUID(leg["streamId"])
    r = client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid})
    assert r.status_code == 200, r.text
    stopped = r.json()["autotranscribeResponse"]
    for role in ("customer", "agent"):
        assert stopped[role]["streamId"] == legs[role]["streamId"]
        assert set(stopped[role]["summary"]) == {"totalAudioBytes", "audioDurationMs", "streamingSeconds",
                                                 "transcripts"}
    assert_error(client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid}), 409, "409-201")
    again = client.post(START, headers=ACME, json=body(guid)).json()["autotranscribeResponse"]
    assert again["customer"]["streamId"] != legs["customer"]["streamId"]  # a new stream per start
    assert_error(client.post(START, headers=ACME, json=body(guid)), 409, "409-201")


def test_unauthorized(client):
    seen = set()
    for headers in ({}, {"asapp-api-id": "ka"}, {"asapp-api-id": "ka", "asapp-api-secret": "wrong"},
                    {"asapp-api-id": "nobody", "asapp-api-secret": "sa"}):
        err = assert_error(client.post(START, headers=headers, json=body("x")), 401, "401-01")
        seen.add(err["requestId"])
    assert len(seen) == 4  # a fresh requestId each time


@pytest.mark.parametrize("payload", [
    b"{not json", b"[1, 2]", b"", b'"text"',
    json.dumps({"guid": "g", "customerId": "c", "agentId": "a"}).encode(),
    json.dumps({"namespace": "twilio", "customerId": "c", "agentId": "a"}).encode(),
    json.dumps({"namespace": "twilio", "guid": 12345, "customerId": "c", "agentId": "a"}).encode(),
    json.dumps({"namespace": "twilio", "guid": "g", "agentId": "a"}).encode(),
    json.dumps(body("g", autotranscribeParams="en-US")).encode(),
    json.dumps(body("g", autotranscribeParams={"detailedToken": "yes"})).encode(),
    json.dumps(body("g", autotranscribeParams={"language": 7})).encode(),
    json.dumps(body("g", twilioParams={"trackMap": ["inbound"]})).encode(),
    json.dumps(body("g", namespace=["twilio"])).encode(),
])
def test_bad_request_400_01(client, payload):
    assert_error(client.post(START, headers={**ACME, "content-type": "application/json"}, content=payload),
                 400, "400-01")


@pytest.mark.parametrize("payload", [
    body("g", namespace="skype"),
    body("g", siprecParams={"mediaLineOrder": "MIDDLE"}),
    body("g", twilioParams={"trackMap": {"inbound": "robot"}}),
    body("g", amazonConnectParams={"startSelectorType": "LATER"}),
    body("has space"),
])
def test_bad_mg_parameter_400_201(client, payload):
    assert_error(client.post(START, headers=ACME, json=payload), 400, "400-201")


@pytest.mark.parametrize("payload", [
    body("g", autotranscribeParams={"detailedToken": True}),
    body("g", autotranscribeParams={"detailedToken": True, "redactionOutput": "redacted_and_unredacted"}),
    body("g", autotranscribeParams={"redactionOutput": "partly"}),
    body("g", amazonConnectParams={"streamArn": "arn:x", "startSelectorType": "FRAGMENT_NUMBER"}),
    body("g", twilioParams={"trackMap": {"inbound": "agent", "outbound": "agent"}}),
])
def test_bad_combination_400_202(client, payload):
    assert_error(client.post(START, headers=ACME, json=payload), 400, "400-202")


def test_detailed_token_with_unredacted_is_fine(server, client):
    guid = "CA" + uuid.uuid4().hex
    connect(server, guid)
    r = client.post(START, headers=ACME, json=body(guid, autotranscribeParams={
        "detailedToken": True, "redactionOutput": "unredacted", "language": "en-US"}))
    assert r.status_code == 200 and r.json()["isOk"] is True


def test_no_such_call_and_other_tenant_400_203(server, client):
    assert_error(client.post(START, headers=ACME, json=body("CA-nobody")), 400, "400-203")
    assert_error(client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": "CA-nobody"}), 400, "400-203")
    guid = "CA" + uuid.uuid4().hex
    connect(server, guid, tenant="globex")
    theirs_start = client.post(START, headers=ACME, json=body(guid))
    theirs_stop = client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid})
    assert_error(theirs_start, 400, "400-203")
    assert_error(theirs_stop, 400, "400-203")
    assert theirs_start.json()["error"]["message"] == client.post(START, headers=ACME, json=body("CA-x")).json()[
        "error"]["message"]  # indistinguishable from a call that does not exist
    assert client.post(START, headers=GLOBEX, json=body(guid)).status_code == 200  # the owner can
    assert_error(client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid}), 400, "400-203")
    assert client.post(STOP, headers=GLOBEX, json={"namespace": "twilio", "guid": guid}).status_code == 200
    assert server.services.registry.get_call("acme", guid) is None  # nor see it


def test_unsupported_language_4050(server, client):
    guid = "CA" + uuid.uuid4().hex
    connect(server, guid)
    r = client.post(START, headers=ACME, json=body(guid, autotranscribeParams={"language": "xx-YY"}))
    assert r.status_code == 200
    out = r.json()
    assert out["isOk"] is False and out["errorMessage"]
    for leg in out["autotranscribeResponse"].values():
        assert leg["status"]["code"] == 4050 and "streamId" not in leg
    assert_error(client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid}), 409, "409-201")


def test_body_too_large_413(server, client):
    limit = server.settings.max_body_bytes
    big = body("g", padding="x" * (limit + 10))
    assert_error(client.post(START, headers=ACME, json=big), 413, "413-01")

    def chunks():  # no Content-Length: the server must count what it reads
        data = json.dumps(big).encode()
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    assert_error(client.post(START, headers={**ACME, "content-type": "application/json"}, content=chunks()),
                 413, "413-01")


def test_concurrent_start_one_wins_409_202(tmp_path_factory, wait_until, engine):
    with running_app(make_settings(tmp_path_factory, start_wait_for_media_s=30), engine=engine) as server:
        guid = "CA" + uuid.uuid4().hex

        def start():
            return httpx.post(server.url + START, headers=ACME, json=body(guid), timeout=60)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(start)  # waits for the call's media, holding the guid
            wait_until(lambda: getattr(server.app.state, "control_limits", None) is not None
                       and server.app.state.control_limits.in_flight._busy, "the first start to be in flight")
            assert_error(start(), 409, "409-202")
            connect(server, guid)
            assert first.result().status_code == 200


def test_rate_limit_429(tmp_path_factory, engine):
    with running_app(make_settings(tmp_path_factory, rate_limit_per_minute=3), engine=engine) as server:
        with httpx.Client(base_url=server.url) as c:
            codes = [c.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": "g"}).status_code
                     for _ in range(3)]
            assert codes == [400, 400, 400]
            r = c.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": "g"})
            assert_error(r, 429, "429-01")
            assert int(r.headers["Retry-After"]) >= 1
            # another key has its own budget
            assert c.post(STOP, headers=GLOBEX, json={"namespace": "twilio", "guid": "g"}).status_code == 400


def test_no_capacity_503(server, client):
    guid = "CA" + uuid.uuid4().hex
    connect(server, guid)
    scheduler = server.services.scheduler
    real = scheduler.can_admit
    scheduler.can_admit = lambda extra_legs=1: False
    try:
        assert_error(client.post(START, headers=ACME, json=body(guid)), 503, "503-01")
    finally:
        scheduler.can_admit = real
    assert client.post(START, headers=ACME, json=body(guid)).status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["namespace", "guid", "customerId", "agentId", "autotranscribeParams",
                               "siprecParams", "twilioParams", "amazonConnectParams", "language",
                               "redactionOutput", "detailedToken", "trackMap", "inbound", "startSelectorType"])
bodies = st.one_of(
    json_values,
    st.dictionaries(field_names, json_values, max_size=8),
    st.fixed_dictionaries({"namespace": st.sampled_from(["twilio", "siprec", "amazonconnect", "genesysaudiohook"]),
                           "guid": st.text(min_size=1, max_size=10), "customerId": st.text(max_size=5),
                           "agentId": st.text(max_size=5)},
                          optional={"autotranscribeParams": st.dictionaries(field_names, json_values, max_size=3),
                                    "amazonConnectParams": st.dictionaries(field_names, json_values, max_size=3)}),
)


@hyp_settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=bodies, path=st.sampled_from([START, STOP]))
def test_fuzz_never_500(fuzz_client, payload, path):
    r = fuzz_client.post(path, headers={**ACME, "content-type": "application/json"}, content=json.dumps(payload))
    assert r.status_code in (200, 400, 409), r.text
    assert "Traceback" not in r.text
    if r.status_code != 200:
        assert r.json()["error"]["code"] in ("400-01", "400-201", "400-202", "400-203", "409-201")


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory, engine):
    with running_app(make_settings(tmp_path_factory, start_wait_for_media_s=0), engine=engine) as s:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            yield c
