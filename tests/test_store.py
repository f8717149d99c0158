"""Storage on SQLite and on a real PostgreSQL: migrations, persisting call events, reads, the outbox."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from callscribe.api import asapp_wire
from callscribe.api.messages import message_item
from callscribe.api.native import detail_json
from callscribe.calls.events import EventBus
from callscribe.delivery.persister import Persister
from callscribe.store import NewOutbox, Store
from callscribe.store.models import Base


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.db.migrate()
    yield s
    s.close()


def test_migrations_apply_from_empty_match_the_models_and_rerun_cleanly(db_url):
    s = Store(db_url)
    try:
        s.db.migrate()
        s.db.migrate()  # already at head: nothing to do, no error
        tables = set(inspect(s.db.engine).get_table_names())
        assert {"calls", "call_events", "stream_intervals", "utterances", "recordings", "webhook_outbox",
                "alembic_version"} <= tables
        with s.db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        s.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        s.db.migrate()
        with s.db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        s.close()


def _save(store: Store, *events, outbox: bool = False) -> None:
    items = []
    for e in events:
        box = NewOutbox(f"m-{e.call.call_id}-{e.seq}", f"{e.call.call_id}:{getattr(e, 'role', '')}", '{"x":1}') \
            if outbox and getattr(e, "kind", None) == "final" else None
        items.append((e, box))
    store.calls.save_events(items)


def test_a_call_lifecycle_is_stored_and_read_back(store, call_script):
    c = call_script("CA100")
    _save(store, c.state("media-connected"), c.started(recording=True),
          c.utterance("customer", "hel", kind="partial"),
          c.utterance("customer", "hello there"), c.utterance("agent", "hi, how can I help"),
          c.stopped(customer=(16000, 1000, 1, 1), agent=(32000, 2000, 2, 1)),
          c.state("recording-saved", role="customer", stream_id=c.stream_ids["customer"],
                  path="recordings/acme/x/customer.wav", duration_ms=1000),
          c.started(redaction="redacted_and_unredacted"),
          c.utterance("customer", "my card is ####", unredacted="my card is 4111"),
          c.state("media-ended"))

    detail = detail_json(store.calls.call_detail("acme", "CA100"))
    assert detail["state"] == "ended" and detail["endedAt"] is not None
    assert detail["lastSeq"] == c.seq
    streams = detail["streams"]
    assert [(s["role"], s["summary"] is not None) for s in streams] == [
        ("customer", True), ("agent", True), ("customer", False), ("agent", False)]
    assert streams[0]["summary"] == {"totalAudioBytes": 16000, "audioDurationMs": 1000, "streamingSeconds": 1,
                                     "transcripts": 1}
    assert streams[0]["audioRecordingAllowed"] is True
    assert all(s["stoppedAt"] for s in streams)  # media-ended closed the second interval
    [rec] = detail["recordings"]
    assert (rec["role"], rec["streamId"], rec["durationMs"]) == ("customer", streams[0]["streamId"], 1000)

    items = [message_item(m) for m in store.calls.messages("acme", "CA100")]
    assert [i["text"] for i in items] == ["hello there", "hi, how can I help", "my card is ####"]
    assert [i["sender"] for i in items] == [{"role": "customer", "externalId": "customer-1"},
                                            {"role": "agent", "externalId": "agent-1"},
                                            {"role": "customer", "externalId": "customer-1"}]
    assert "unredactedText" not in items[0] and items[2]["unredactedText"] == "my card is 4111"
    assert all(i["createdTimestamp"].endswith("Z") and i["clientTimestamp"].endswith("Z") for i in items)
    assert len({i["messageId"] for i in items}) == 3

    # Replay source: finals and state events, no partials, in seq order.
    events = store.calls.events_since(c.ref.call_id, 0)
    assert [e.seq for e in events] == [s for s in range(1, c.seq + 1) if s != 3]
    assert [e.seq for e in store.calls.events_since(c.ref.call_id, 8)] == [9, 10]


def test_call_state_follows_the_lifecycle_only(store, call_script):
    c = call_script("CA-states")
    _save(store, c.state("media-connected"), c.started())
    assert store.calls.find_call("acme", "CA-states").state == "streaming"
    _save(store, c.state("recording-saved", role="agent", stream_id="s", path="p.wav"))
    assert store.calls.find_call("acme", "CA-states").state == "streaming"
    _save(store, c.state("media-ended"), c.stopped(agent=(0, 0, 0, 0)))
    assert store.calls.find_call("acme", "CA-states").state == "ended"  # a late stop does not revive it
    _save(store, c.state("media-connected"))
    call = store.calls.find_call("acme", "CA-states")
    assert call.state == "connected" and call.ended_at is None


def test_words_are_kept_only_with_detailed_token(store, call_script):
    c = call_script("CA-words")
    _save(store, c.started(redaction="unredacted", detailed=True), c.utterance("agent", "thanks for calling"))
    final = store.calls.events_since(c.ref.call_id, 0)[-1]
    assert [w.text for w in final.words] == ["thanks", "for", "calling"]
    assert final.words[1].start_ms == 100 and final.words[1].confidence == pytest.approx(0.9)


def test_reads_never_cross_tenants(store, call_script):
    mine, theirs = call_script("G1", tenant="acme"), call_script("G1", tenant="globex")
    _save(store, mine.started(), mine.utterance("customer", "acme words"))
    _save(store, theirs.started(), theirs.utterance("customer", "globex words"))
    _save(store, mine.state("recording-saved", role="customer", stream_id="s1", path="a.wav"))
    assert [i.text for i in store.calls.messages("acme", "G1")] == ["acme words"]
    assert [i.text for i in store.calls.messages("globex", "G1")] == ["globex words"]
    assert store.calls.messages("initech", "G1") is None
    assert store.calls.call_detail("initech", "G1") is None
    assert [c.guid for c in store.calls.list_calls("globex")] == ["G1"]
    assert store.calls.recording_path("acme", "G1", "s1", "customer") == "a.wav"
    assert store.calls.recording_path("globex", "G1", "s1", "customer") is None


def test_messages_span_namespaces_and_stop_at_the_limit(store, call_script):
    a, b = call_script("G2", namespace="twilio"), call_script("G2", namespace="siprec")
    _save(store, a.started(), *[a.utterance("customer", f"a{i}") for i in range(3)])
    _save(store, b.started(), *[b.utterance("agent", f"b{i}") for i in range(3)])
    assert [i.text for i in store.calls.messages("acme", "G2")] == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert len(store.calls.messages("acme", "G2", limit=4)) == 4
    assert store.calls.messages("acme", "G2-unknown") is None


def test_list_calls_is_newest_first_with_a_limit(store, call_script):
    scripts = [call_script(f"L{i}") for i in range(3)]
    for s in scripts:
        _save(store, s.state("media-connected"))
    listed = store.calls.list_calls("acme", limit=2)
    assert [c.guid for c in listed] == ["L2", "L1"]


def test_outbox_heads_keep_per_leg_order(store, call_script):
    c = call_script("G3")
    _save(store, c.started(), c.utterance("customer", "one"), c.utterance("agent", "two"),
          c.utterance("customer", "three"), outbox=True)
    heads = store.outbox.heads()
    assert sorted(h.msg_id for h in heads) == [f"m-{c.ref.call_id}-2", f"m-{c.ref.call_id}-3"]
    assert store.outbox.pending_count() == 3
    first = next(h for h in heads if h.msg_id.endswith("-2"))
    now = datetime.now(timezone.utc)
    store.outbox.mark_failed(first.id, 1, now + timedelta(hours=1), "HTTP 500")
    again = next(h for h in store.outbox.heads() if h.ordering_key == first.ordering_key)
    assert again.id == first.id and again.attempts == 1 and again.next_attempt_at > now  # later row waits
    assert store.outbox.resume_all(now) == 1
    store.outbox.mark_delivered(first.id, 2, now)
    heads = store.outbox.heads()
    assert sorted(h.msg_id for h in heads) == [f"m-{c.ref.call_id}-3", f"m-{c.ref.call_id}-4"]
    assert store.outbox.pending_count() == 2
    assert store.outbox.purge_delivered(now + timedelta(seconds=1)) == 1


async def test_persister_stores_in_order_skips_partials_and_survives_a_bad_event(db_url, call_script):
    store = Store(db_url)
    await store.start()
    bus = EventBus()
    persister = Persister(bus, store, webhooks_enabled=True, formatters={"asapp": asapp_wire.webhook})
    persister.start()
    try:
        c = call_script("G4")
        first = c.utterance("customer", "first")
        for event in (c.started(), first, c.utterance("customer", "par", kind="partial"),
                      c.utterance("agent", "second")):
            bus.publish(event)
        bus.publish(first)  # a duplicate seq: refused by the database, logged, and nothing else is lost
        bus.publish(c.utterance("customer", "third"))
        await persister.flush()
        items = await store.db.read(store.calls.messages, "acme", "G4")
        assert [i.text for i in items] == ["first", "second", "third"]
        assert await store.db.read(store.outbox.pending_count) == 3
    finally:
        await persister.stop()
        await asyncio.get_running_loop().run_in_executor(None, store.close)
