"""Native API against a running app: calls, one call, recordings, and the live events WebSocket."""

from __future__ import annotations

import io
import json
import threading
import wave
from datetime import datetime, timezone

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
GLOBEX = {"asapp-api-id": "kb", "asapp-api-secret": "sb"}


def events_url(app, guid: str, since: int | None = None, creds: str = "apiId=ka&apiSecret=sa") -> str:
    query = creds + (f"&since={since}" if since is not None else "")
    return f"{app.ws_url}/v1/calls/{guid}/events?{query}"


def receive_until_closed(ws) -> tuple[list[dict], int | None, str]:
    got = []
    try:
        while True:
            got.append(json.loads(ws.recv(timeout=30)))
    except ConnectionClosed as exc:
        return got, exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""


def test_calls_list_and_detail(start_app, call_script):
    app = start_app()
    calls = [call_script(f"CA-{i}") for i in range(3)]
    for c in calls:
        app.publish(c.state("media-connected"))
    c = calls[0]
    app.publish(c.started(recording=True), c.utterance("customer", "hello"),
                c.stopped(customer=(16000, 1000, 1, 1), agent=(0, 0, 1, 0)))
    hidden = call_script("CA-hidden", tenant="globex")
    app.publish(hidden.state("media-connected"))
    app.flush()

    r = httpx.get(app.url + "/v1/calls", headers=ACME)
    assert r.status_code == 200
    assert [x["guid"] for x in r.json()["calls"]] == ["CA-2", "CA-1", "CA-0"]
    assert [x["guid"] for x in httpx.get(app.url + "/v1/calls?limit=1", headers=ACME).json()["calls"]] == ["CA-2"]
    assert [x["guid"] for x in httpx.get(app.url + "/v1/calls", headers=GLOBEX).json()["calls"]] == ["CA-hidden"]
    assert httpx.get(app.url + "/v1/calls").status_code == 401
    assert httpx.get(app.url + "/v1/calls?limit=0", headers=ACME).json()["error"]["code"] == "400-01"

    detail = httpx.get(app.url + "/v1/calls/CA-0", headers=ACME).json()
    assert detail["callId"] == c.ref.call_id and detail["state"] == "connected"
    assert [(s["role"], s["summary"]["totalAudioBytes"]) for s in detail["streams"]] == [
        ("customer", 16000), ("agent", 0)]
    assert {leg["role"] for leg in detail["legs"]} == {"customer", "agent"}
    assert detail["streams"][0]["redactionOutput"] == "redacted"
    assert httpx.get(app.url + "/v1/calls/CA-0", headers=GLOBEX).status_code == 404
    assert httpx.get(app.url + "/v1/calls/nope", headers=ACME).json()["error"]["code"] == "404-01"


def test_recordings_are_served_to_their_tenant_only(start_app, call_script):
    app = start_app()
    c = call_script("CA-rec")
    rel = f"recordings/acme/{c.ref.call_id}/customer-s1.wav"
    path = app.settings.data_dir / rel
    path.parent.mkdir(parents=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    app.publish(c.started(recording=True),
                c.state("recording-saved", role="customer", stream_id="s1", path=rel, duration_ms=100),
                c.state("recording-saved", role="agent", stream_id="s1", path="../../../etc/passwd"))
    app.flush()

    detail = httpx.get(app.url + "/v1/calls/CA-rec", headers=ACME).json()
    url = next(r["url"] for r in detail["recordings"] if r["role"] == "customer")
    r = httpx.get(app.url + url, headers=ACME)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getnframes() == 800
    assert httpx.get(app.url + url, headers=GLOBEX).status_code == 404
    assert httpx.get(app.url + "/v1/calls/CA-rec/recordings/s1/agent.wav", headers=ACME).status_code == 404


def test_events_replay_since_then_continue_live_then_close_at_the_end(start_app, call_script):
    app = start_app()
    c = call_script("CA-ws")
    app.publish(c.state("media-connected"), c.started(), c.utterance("customer", "hel", kind="partial"),
                c.utterance("customer", "hello"), c.utterance("agent", "hi", kind="partial"))
    with connect(events_url(app, "CA-ws", since=2)) as ws:
        first = [json.loads(ws.recv(timeout=30)) for _ in range(3)]
        assert [(e["seq"], e["type"]) for e in first] == [(3, "partial"), (4, "final"), (5, "partial")]
        assert first[1]["text"] == "hello" and first[1]["role"] == "customer"
        app.publish(c.utterance("agent", "hi there"), c.state("streaming-stopped"), c.state("media-ended"))
        rest, code, reason = receive_until_closed(ws)
    assert [(e["seq"], e["type"]) for e in rest] == [(6, "final"), (7, "state"), (8, "state")]
    assert rest[-1]["state"] == "media-ended" and code == 1000

    # After the end, a late subscriber replays the stored finals and states (partials are gone).
    with connect(events_url(app, "CA-ws")) as ws:
        replay, code, _ = receive_until_closed(ws)
    assert [e["seq"] for e in replay] == [1, 2, 4, 6, 7, 8] and code == 1000


def test_subscribing_during_a_burst_misses_nothing_and_repeats_nothing(start_app, call_script):
    from callscribe.delivery.fanout import RING_SIZE

    app = start_app()
    c = call_script("CA-burst")
    app.publish(c.state("media-connected"))
    app.flush()
    burst = [c.utterance("customer" if i % 2 else "agent", f"w{i}", kind="partial" if i % 3 else "final")
             for i in range(300)]
    last = burst[-1].seq

    def publisher() -> None:
        for i in range(0, len(burst), 3):
            app.publish(*burst[i:i + 3])

    thread = threading.Thread(target=publisher)
    with connect(events_url(app, "CA-burst", since=0)) as ws:
        thread.start()  # events flow while the subscriber replays its backlog
        got = []
        while not got or got[-1]["seq"] < last:
            got.append(json.loads(ws.recv(timeout=30)))
        thread.join()
        app.publish(c.state("media-ended"))
        rest, code, _ = receive_until_closed(ws)
    seqs = [e["seq"] for e in got + rest]
    assert seqs == sorted(set(seqs)) and seqs[-1] == last + 1 and code == 1000
    expected = {1, last + 1} | {e.seq for e in burst if e.kind == "final" or e.seq > last - RING_SIZE}
    assert expected <= set(seqs)  # every final, and every partial the ring still held


def test_a_slow_subscriber_is_cut_off_and_resumes_with_since(start_app, call_script, wait_until):
    app = start_app()
    c = call_script("CA-slow")
    app.publish(c.state("media-connected"), c.started())
    with connect(events_url(app, "CA-slow", since=0)) as ok:
        assert [json.loads(ok.recv(timeout=30))["seq"] for _ in range(2)] == [1, 2]  # ok is subscribed
        app.services.fanout.queue_size = 5  # for subscribers from now on
        with connect(events_url(app, "CA-slow", since=2)) as slow:
            wait_until(lambda: app.services.fanout.subscriber_count(c.ref.call_id) == 2, "two subscribers")
            app.publish(*[c.utterance("customer", f"u{i}") for i in range(20)])  # in one tick: overflow
            got, code, reason = receive_until_closed(slow)
        assert code == 1013 and f"since={got[-1]['seq']}" in reason
        assert [e["seq"] for e in got] == list(range(3, 3 + len(got)))
        # The other subscriber was not held up.
        assert [json.loads(ok.recv(timeout=30))["seq"] for _ in range(20)] == list(range(3, 23))
    last = got[-1]["seq"]
    with connect(events_url(app, "CA-slow", since=last)) as again:
        resumed = [json.loads(again.recv(timeout=30)) for _ in range(22 - last)]
    assert [e["seq"] for e in resumed] == list(range(last + 1, 23))


@pytest.mark.parametrize("query,code", [("apiId=ka&apiSecret=bad", 4401), ("apiId=kb&apiSecret=sb", 4404),
                                        ("apiId=ka&apiSecret=sa&since=x", 4400)])
def test_events_socket_refusals(start_app, call_script, query, code):
    app = start_app()
    c = call_script("CA-refuse")
    app.publish(c.state("media-connected"))
    app.flush()
    with connect(events_url(app, "CA-refuse", creds=query)) as ws:
        got, closed_with, _ = receive_until_closed(ws)
    assert got == [] and closed_with == code


def test_events_socket_accepts_header_credentials(start_app, call_script):
    app = start_app()
    c = call_script("CA-hdr")
    app.publish(c.state("media-connected"), c.state("media-ended"))
    with connect(f"{app.ws_url}/v1/calls/CA-hdr/events", additional_headers=ACME) as ws:
        got, code, _ = receive_until_closed(ws)
    assert [e["state"] for e in got] == ["media-connected", "media-ended"] and code == 1000


def test_a_call_closed_for_its_lost_node_ends_open_sockets_and_reconnects_whatever_its_seq(
        start_app, call_script, pg_server):
    """The interrupted marker of a call whose node was lost (cluster/reaper.py) is numbered above the
    stored seqs only: partials are not stored, so subscribers may have had live seqs at or above it.
    It still reaches an open socket, and a reconnect with since= the last seq had, and closes them."""
    import pg

    with pg.fresh_database(pg_server) as url:
        app = start_app(database_url=url)
        c = call_script("CA-lost")
        app.publish(c.state("media-connected"), c.started(), c.utterance("customer", "hel", kind="partial"),
                    c.utterance("customer", "hello", kind="partial"))
        with connect(events_url(app, "CA-lost", since=0)) as ws:
            assert [json.loads(ws.recv(timeout=30))["seq"] for _ in range(4)] == [1, 2, 3, 4]
            app.flush()
            store = app.services.get_store()
            [marker] = app.run(store.db.write(store.calls.interrupt_calls, [c.ref.call_id],
                                              datetime.now(timezone.utc), "the node that held the call stopped"))
            assert marker.seq == 3  # the stored last seq (2) + 1: below what the socket got live

            async def relayed() -> None:  # as the reaper's publish on Redis reaches a node's hub (not its bus:
                app.services.fanout._on_event(marker)  # the row is stored already)

            app.run(relayed())
            got, code, reason = receive_until_closed(ws)
        assert [(e["seq"], e["state"]) for e in got] == [(3, "media-interrupted")] and code == 1000
        with connect(events_url(app, "CA-lost", since=4)) as again:
            got, code, _ = receive_until_closed(again)
        assert [(e["seq"], e["state"]) for e in got] == [(3, "media-interrupted")] and code == 1000
