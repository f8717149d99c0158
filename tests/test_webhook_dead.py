"""Webhook dead letters against the running app and a real HTTP receiver: a refused or
over-budget webhook steps aside, the rest of its leg goes on, and it can be listed and replayed."""

from __future__ import annotations

import dataclasses
import json
import threading

import httpx

from test_webhook import FAST, new_secret, receiver  # noqa: F401  (receiver is a fixture)

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
GLOBEX = {"asapp-api-id": "kb", "asapp-api-secret": "sb"}


def _texts(hook) -> list[str]:
    return [json.loads(b)["autotranscribeResponse"]["utterance"][0]["text"] for _, b in hook.delivered()]


def _metric(app, line_start: str) -> float:
    text = app.run(_render(app)).decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


async def _render(app) -> bytes:
    return app.services.metrics.render()


def test_a_refused_webhook_is_a_dead_letter_and_its_leg_goes_on(start_app, receiver, call_script, wait_until):
    accept_all = threading.Event()

    def decide(payload, headers, n):
        text = payload["autotranscribeResponse"]["utterance"][0]["text"]
        return 200 if accept_all.is_set() or text != "bad" else 422

    hook = receiver(decide=decide)
    app = start_app(webhook_url=hook.url, webhook_secret=new_secret())
    app.services.webhooks.policy = FAST
    c = call_script("CA-dead")
    app.publish(c.started(), c.utterance("customer", "one"), c.utterance("customer", "bad"),
                c.utterance("customer", "three"), c.utterance("customer", "four"))
    wait_until(lambda: _texts(hook) == ["one", "three", "four"], "the rest of the leg delivered")
    assert [s for _, _, s in hook.requests].count(422) == 1  # refused once, never retried
    wait_until(lambda: _metric(app, "callscribe_webhook_dead_letters_total{") == 1, "the dead letter counted")
    assert _metric(app, 'callscribe_webhook_dead_letters_total{reason="refused"}') == 1

    listed = httpx.get(app.url + "/v1/webhooks/dead", headers=ACME).json()
    [letter] = listed["deadLetters"]
    assert letter["guid"] == "CA-dead" and letter["callId"] == c.ref.call_id and letter["attempts"] == 1
    assert letter["payload"]["autotranscribeResponse"]["utterance"] == [{"text": "bad"}]
    assert letter["lastError"].startswith("HTTP 422") and listed["next"] is None
    assert httpx.get(app.url + "/v1/webhooks/dead", headers=GLOBEX).json()["deadLetters"] == []
    assert httpx.get(app.url + "/v1/webhooks/dead").status_code == 401
    seen = httpx.get(app.url + "/v1/calls/CA-dead/deliveries", headers=ACME).json()  # the dashboard's view
    assert seen["counts"]["dead"] == 1 and {r["participant"] for r in seen["deliveries"]} == {"customer"}

    other = httpx.post(f"{app.url}/v1/webhooks/dead/{letter['id']}/replay", headers=GLOBEX)
    assert other.status_code == 404 and other.json()["error"]["code"] == "404-01"  # another tenant's
    accept_all.set()
    replay = httpx.post(f"{app.url}/v1/webhooks/dead/{letter['id']}/replay", headers=ACME)
    assert replay.status_code == 202
    wait_until(lambda: _texts(hook) == ["one", "three", "four", "bad"], "the replayed letter delivered")
    ids = [h["webhook-id"] for h, body, _ in hook.requests if "\"bad\"" in body]
    assert len(ids) == 2 and len(set(ids)) == 1  # the replay keeps the webhook-id, so a receiver can de-duplicate
    assert httpx.get(app.url + "/v1/webhooks/dead", headers=ACME).json()["deadLetters"] == []
    again = httpx.post(f"{app.url}/v1/webhooks/dead/{letter['id']}/replay", headers=ACME)
    assert again.status_code == 404  # no longer dead


def test_the_retry_budget_ends_in_a_dead_letter(start_app, receiver, call_script, wait_until):
    def decide(payload, headers, n):
        return 503 if payload["autotranscribeResponse"]["utterance"][0]["text"] == "stuck" else 200

    hook = receiver(decide=decide)
    app = start_app(webhook_url=hook.url, webhook_secret=new_secret(), webhook_max_attempts=3)
    assert app.services.webhooks.policy.max_attempts == 3  # the setting reaches the dispatcher
    app.services.webhooks.policy = dataclasses.replace(FAST, max_attempts=3)
    c = call_script("CA-budget")
    app.publish(c.started(), c.utterance("agent", "stuck"), c.utterance("agent", "after"))
    wait_until(lambda: _texts(hook) == ["after"], "the next utterance of the leg delivered")
    assert [s for _, _, s in hook.requests] == [503, 503, 503, 200]
    wait_until(lambda: _metric(app, 'callscribe_webhook_dead_letters_total{reason="budget"}') == 1, "counted")
    [letter] = httpx.get(app.url + "/v1/webhooks/dead", headers=ACME).json()["deadLetters"]
    assert letter["attempts"] == 3 and letter["lastError"].startswith("HTTP 503")


def test_rows_older_than_the_age_budget_die_on_their_next_failure(start_app, receiver, call_script, wait_until):
    from datetime import timedelta

    hook = receiver(decide=lambda payload, headers, n: 500)
    app = start_app(webhook_url=hook.url, webhook_secret=new_secret(), webhook_max_age_s=30)
    assert app.services.webhooks.policy.max_age == timedelta(seconds=30)
    app.services.webhooks.policy = dataclasses.replace(FAST, max_age=timedelta(0))
    c = call_script("CA-age")
    app.publish(c.started(), c.utterance("customer", "late"))
    wait_until(lambda: _metric(app, 'callscribe_webhook_dead_letters_total{reason="budget"}') == 1, "dead by age")
    assert len(hook.requests) == 1


def test_replay_without_webhooks_and_bad_ids_answer_in_the_native_shape(start_app):
    app = start_app()
    r = httpx.post(app.url + "/v1/webhooks/dead/1/replay", headers=ACME)
    assert r.status_code == 409 and r.json()["error"]["code"] == "409-01"
    for bad in ("0", "x", str(2**64)):
        r = httpx.post(f"{app.url}/v1/webhooks/dead/{bad}/replay", headers=ACME)
        assert r.status_code == 400 and set(r.json()["error"]) == {"requestId", "code", "message"}
