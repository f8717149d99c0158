"""Upgrades keep what earlier versions stored: a database written by the first schema (legs keyed by
role) is upgraded to the current one (legs keyed by participant) and its calls read back through the
same reads the APIs use, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import text

from callscribe.api.messages import message_item
from callscribe.api.native import detail_json
from callscribe.store import Store
from callscribe.store.db import alembic_config, upgrade

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def _write_first_schema_call(store: Store) -> None:
    """Rows exactly as revision 0001's code wrote them."""
    ts = T0 if store.db.dialect != "sqlite" else T0.replace(tzinfo=None)
    with store.db.engine.begin() as conn:
        conn.execute(text("INSERT INTO calls (call_id, tenant, namespace, guid, state, created_at, ended_at, last_seq) "
                          "VALUES ('c-old', 'acme', 'twilio', 'CA-old', 'media-ended', :t, :t, 6)"), {"t": ts})
        for sid, role, ext in (("s-c", "customer", "cust-1"), ("s-a", "agent", "agent-1")):
            conn.execute(text(
                "INSERT INTO stream_intervals (call_id, stream_id, role, external_id, started_at, stopped_at, "
                "redaction_output, detailed_token, audio_recording_allowed, params, total_audio_bytes, "
                "audio_duration_ms, streaming_seconds, transcripts) VALUES ('c-old', :sid, :role, :ext, :t, :t, "
                "'redacted', false, true, '{}', 16000, 1000, 1, 1)"), {"sid": sid, "role": role, "ext": ext, "t": ts})
        for seq, role, ext, sid, words in ((3, "customer", "cust-1", "s-c", "my card is ####"),
                                           (4, "agent", "agent-1", "s-a", "thank you")):
            conn.execute(text(
                "INSERT INTO utterances (call_id, seq, role, external_id, stream_id, utterance_no, start_ms, end_ms, "
                "text, redaction_output, created_at) VALUES ('c-old', :seq, :role, :ext, :sid, 0, 100, 900, :words, "
                "'redacted', :t)"), {"seq": seq, "role": role, "ext": ext, "sid": sid, "words": words, "t": ts})
        conn.execute(text("INSERT INTO recordings (call_id, role, stream_id, path, duration_ms, created_at) "
                          "VALUES ('c-old', 'customer', 's-c', 'recordings/acme/c-old/customer-s-c.wav', 1000, :t)"),
                     {"t": ts})


def test_a_first_schema_database_upgrades_and_reads_back(db_url):
    store = Store(db_url)
    try:
        upgrade(store.db.engine, "0001")
        _write_first_schema_call(store)
        store.db.migrate()

        detail = detail_json(store.calls.call_detail("acme", "CA-old"))
        assert detail["state"] == "ended"
        assert [(s["participant"], s["role"], s["externalId"], s["summary"]["audioDurationMs"])
                for s in detail["streams"]] == [("customer", "customer", "cust-1", 1000),
                                                ("agent", "agent", "agent-1", 1000)]
        assert [(r["participant"], r["streamId"]) for r in detail["recordings"]] == [("customer", "s-c")]
        assert store.calls.recording_path("acme", "CA-old", "s-c", "customer") == \
            "recordings/acme/c-old/customer-s-c.wav"
        items = [message_item(m) for m in store.calls.messages("acme", "CA-old")]
        assert [(i["sender"]["role"], i["text"]) for i in items] == [("customer", "my card is ####"),
                                                                      ("agent", "thank you")]
        assert [e.participant for e in store.calls.events_since("c-old", 0)] == ["customer", "agent"]
    finally:
        store.close()


def test_downgrade_returns_to_the_first_schema(db_url):
    store = Store(db_url)
    try:
        store.db.migrate()
        command.downgrade(alembic_config(store.db.engine), "0001")
        _write_first_schema_call(store)  # the first schema's writes work again
        store.db.migrate()
        assert len(store.calls.messages("acme", "CA-old")) == 2
    finally:
        store.close()
