"""Webhooks against a real local HTTP receiver: retries, signatures, order per leg, restart survival."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from callscribe.delivery.outbox import RetryPolicy
from callscribe.delivery.webhook import SECRET_FILE

FAST = RetryPolicy(base_s=0.05, cap_s=0.3, poll_s=0.5)  # the real backoff code, at test speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver on 127.0.0.1. `decide(payload, headers, attempt_no)` gives each status."""

    def __init__(self, port: int | None = None, decide=None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.decide = decide or (lambda payload, headers, n: 200)
        self.requests: list[tuple[dict, str, int]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    n = sum(1 for h, _, _ in receiver.requests if h["webhook-id"] == headers["webhook-id"]) + 1
                    status = receiver.decide(json.loads(body), headers, n)
                    receiver.requests.append((headers, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def delivered(self) -> list[tuple[dict, str]]:
        with self.lock:
            return [(h, b) for h, b, status in self.requests if 200 <= status < 300]


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def test_retried_until_2xx_delivered_once_and_signed(start_app, receiver, call_script, wait_until):
    hook = receiver(decide=lambda payload, headers, n: 500 if n <= 2 else 200)
    secret = new_secret()
    app = start_app(webhook_url=hook.url, webhook_secret=secret)
    app.services.webhooks.policy = FAST
    c = call_script("CA-retry")
    app.publish(c.state("media-connected"), c.started(), c.utterance("customer", "hello", kind="partial"),
                c.utterance("customer", "hello there"))
    wait_until(lambda: hook.delivered(), "delivery")
    app.flush()
    wait_until(lambda: app.run(app.services.store.db.read(app.services.store.outbox.pending_count)) == 0,
               "the row marked delivered")

    assert [s for _, _, s in hook.requests] == [500, 500, 200]  # no partial, and nothing after the 2xx
    [(headers, body)] = hook.delivered()
    payload = Webhook(secret).verify(body, headers)
    assert len({h["webhook-id"] for h, _, _ in hook.requests}) == 1  # one id across retries
    assert payload["type"] == "transcript"
    assert payload["externalConversationId"] == "CA-retry"
    assert payload["streamId"] == c.stream_ids["customer"]
    assert payload["sender"] == {"externalId": "customer-1", "role": "customer"}
    assert payload["autotranscribeResponse"] == {"message": "transcript", "start": 0, "end": 900,
                                                 "utterance": [{"text": "hello there"}]}
    assert payload["sequence"] == 4 and payload["callId"] == c.ref.call_id
    metrics = app.run(_render(app)).decode()
    assert 'callscribe_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert 'callscribe_webhook_attempts_total{outcome="http_5xx"} 2.0' in metrics


async def _render(app) -> bytes:
    return app.services.metrics.render()


def test_unredacted_copy_and_tokens_only_when_the_stream_asked(start_app, receiver, call_script, wait_until):
    hook = receiver()
    app = start_app(webhook_url=hook.url, webhook_secret=new_secret())
    c = call_script("CA-modes")
    app.publish(c.started(redaction="redacted_and_unredacted"),
                c.utterance("customer", "card ####", unredacted="card 4111"))
    app.publish(c.started(redaction="unredacted", detailed=True), c.utterance("customer", "plain words"))
    app.publish(c.started(), c.utterance("customer", "pin ####", unredacted="pin 1234"))
    wait_until(lambda: len(hook.delivered()) == 3, "three deliveries")
    bodies = sorted((json.loads(b) for _, b in hook.delivered()), key=lambda p: p["sequence"])
    both, words, redacted = (p["autotranscribeResponse"] for p in bodies)
    assert both["utterance"] == [{"text": "card ####"}] and both["unredactedUtterance"] == [{"text": "card 4111"}]
    assert "unredactedUtterance" not in words and [t["content"] for t in words["tokens"]] == ["plain", "words"]
    assert redacted["utterance"] == [{"text": "pin ####"}]
    assert "unredactedUtterance" not in redacted and "tokens" not in redacted
    assert "1234" not in json.dumps(bodies[2])


def test_order_per_leg_under_retries_and_legs_do_not_block_each_other(start_app, receiver, call_script,
                                                                       wait_until):
    release_agent = threading.Event()

    def decide(payload, headers, n):
        if payload["sender"]["role"] == "agent" and not release_agent.is_set():
            return 503  # the agent leg is stuck
        return 500 if n == 1 else 200  # every message fails once

    hook = receiver(decide=decide)
    app = start_app(webhook_url=hook.url, webhook_secret=new_secret())
    app.services.webhooks.policy = FAST
    c = call_script("CA-order")
    events = [c.started()]
    for i in range(5):
        events += [c.utterance("customer", f"c{i}"), c.utterance("agent", f"a{i}")]
    app.publish(*events)

    wait_until(lambda: len(hook.delivered()) == 5, "the customer leg delivered while the agent leg fails")
    assert [json.loads(b)["autotranscribeResponse"]["utterance"][0]["text"] for _, b in hook.delivered()] == [
        f"c{i}" for i in range(5)]
    agent_tried = {json.loads(b)["sequence"] for h, b, _ in hook.requests if "agent" in b}
    assert len(agent_tried) == 1  # only the head of the agent leg is ever attempted while it fails
    release_agent.set()
    wait_until(lambda: len(hook.delivered()) == 10, "the agent leg delivered after release")
    agent = [json.loads(b)["autotranscribeResponse"]["utterance"][0]["text"] for _, b in hook.delivered()
             if json.loads(b)["sender"]["role"] == "agent"]
    assert agent == [f"a{i}" for i in range(5)]
    ids = [h["webhook-id"] for h, _ in hook.delivered()]
    assert len(ids) == len(set(ids))


def test_pending_webhooks_survive_a_restart(start_app, tmp_path, db_url, call_script, wait_until):
    port = free_port()  # nothing listens here yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hook"
    first = start_app(webhook_url=url, database_url=db_url)
    first.services.webhooks.policy = FAST
    c = call_script("CA-restart")
    app_events = [c.state("media-connected"), c.started(), c.utterance("customer", "one"),
                  c.utterance("agent", "two"), c.utterance("customer", "three")]
    first.publish(*app_events)
    first.flush()
    outbox = first.services.store.outbox
    wait_until(lambda: all(h.attempts >= 1 for h in first.run(first.services.store.db.read(outbox.heads))),
               "failed attempts while the receiver is down")
    first.stop()

    secret = (tmp_path / "data" / SECRET_FILE).read_text().strip()  # generated at first start, kept
    hook = Receiver(port=port).start()
    try:
        second = start_app(webhook_url=url, database_url=db_url)
        wait_until(lambda: second.run(second.services.store.db.read(second.services.store.outbox.pending_count)) == 0,
                   "delivery after the restart")
        assert len(hook.delivered()) == 3  # each once
        texts = {}
        for headers, body in hook.delivered():
            payload = Webhook(secret).verify(body, headers)
            texts.setdefault(payload["sender"]["role"], []).append(payload["autotranscribeResponse"]["utterance"][0]["text"])
        assert texts == {"customer": ["one", "three"], "agent": ["two"]}
    finally:
        hook.stop()


def test_no_webhook_url_means_no_outbox(start_app, call_script):
    app = start_app()
    assert app.services.webhooks is None
    c = call_script("CA-none")
    app.publish(c.started(), c.utterance("customer", "hello"))
    app.flush()
    store = app.services.store
    assert app.run(store.db.read(store.outbox.pending_count)) == 0
    assert [i.text for i in app.run(store.db.read(store.calls.messages, "acme", "CA-none"))] == ["hello"]
    assert not os.path.exists(app.settings.data_dir / SECRET_FILE)
