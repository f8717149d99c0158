"""GET /conversation/v1/conversation/messages against a running app."""

from __future__ import annotations

from datetime import datetime

import httpx

PATH = "/conversation/v1/conversation/messages"
ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
GLOBEX = {"asapp-api-id": "kb", "asapp-api-secret": "sb"}


def test_messages_shape_order_modes_and_tenants(start_app, call_script):
    app = start_app()
    twilio, siprec = call_script("G-msg", namespace="twilio"), call_script("G-msg", namespace="siprec")
    app.publish(twilio.state("media-connected"), twilio.started(),
                twilio.utterance("customer", "hi", kind="partial"),
                twilio.utterance("customer", "hi there"), twilio.utterance("agent", "hello, how can I help"))
    app.publish(siprec.state("media-connected"), siprec.started(redaction="redacted_and_unredacted"),
                siprec.utterance("customer", "my card is ####", unredacted="my card is 4111"))
    other = call_script("G-msg", tenant="globex")
    app.publish(other.started(), other.utterance("agent", "globex only"))
    app.flush()

    r = httpx.get(app.url + PATH, params={"externalId": "G-msg"}, headers=ACME)
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["text"] for i in items] == ["hi there", "hello, how can I help", "my card is ####"]
    for item in items:
        assert {"text", "sender", "messageId", "createdTimestamp", "clientTimestamp"} <= set(item)
        assert set(item["sender"]) == {"role", "externalId"}
        datetime.fromisoformat(item["createdTimestamp"].replace("Z", "+00:00"))
        datetime.fromisoformat(item["clientTimestamp"].replace("Z", "+00:00"))
    assert items[1]["sender"] == {"role": "agent", "externalId": "agent-1"}
    assert [("unredactedText" in i) for i in items] == [False, False, True]
    assert items[2]["unredactedText"] == "my card is 4111"

    theirs = httpx.get(app.url + PATH, params={"externalId": "G-msg"}, headers=GLOBEX).json()["items"]
    assert [i["text"] for i in theirs] == ["globex only"]


def test_messages_errors(start_app, call_script):
    app = start_app()
    quiet = call_script("G-quiet")
    app.publish(quiet.state("media-connected"))
    app.flush()

    r = httpx.get(app.url + PATH, params={"externalId": "G-quiet"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "401-01"
    r = httpx.get(app.url + PATH, params={"externalId": "G-quiet"}, headers={**ACME, "asapp-api-secret": "wrong"})
    assert r.status_code == 401
    r = httpx.get(app.url + PATH, headers=ACME)
    assert r.status_code == 400 and r.json()["error"]["code"] == "400-01"
    assert r.json()["error"]["requestId"]
    r = httpx.get(app.url + PATH, params={"externalId": "nope"}, headers=ACME)
    assert r.status_code == 404 and r.json()["error"]["code"] == "404-01"
    r = httpx.get(app.url + PATH, params={"externalId": "G-quiet"}, headers=GLOBEX)
    assert r.status_code == 404  # another tenant's call looks like no call
    r = httpx.get(app.url + PATH, params={"externalId": "G-quiet"}, headers=ACME)
    assert r.status_code == 200 and r.json() == {"items": []}
