"""Retention against the running app: calls past CALLSCRIBE_RETENTION_DAYS lose their transcripts,
events, webhooks and recording files; newer calls keep everything; 0 keeps all."""

from __future__ import annotations

import dataclasses
import wave
from datetime import datetime, timedelta, timezone

import httpx

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


def _aged(days: float, *events):
    when = datetime.now(timezone.utc) - timedelta(days=days)
    return [dataclasses.replace(e, created_at=when) for e in events]


def _recorded_call(app, c, days: float) -> object:
    rel = f"recordings/acme/{c.ref.call_id}/customer-s1.wav"
    path = app.settings.data_dir / rel
    path.parent.mkdir(parents=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    app.publish(*_aged(days + 0.1, c.state("media-connected"), c.started(recording=True),
                       c.utterance("customer", f"said {days} days ago")))
    app.publish(*_aged(days, c.state("recording-saved", role="customer", stream_id="s1", path=rel, duration_ms=100),
                       c.state("media-ended")))
    return path


def _outbox_rows(app) -> int:
    from sqlalchemy import func, select

    from callscribe.store.models import OutboxRow

    with app.services.store.db.sessions() as s:
        return s.scalar(select(func.count()).select_from(OutboxRow))


def test_the_sweep_deletes_calls_past_retention_and_keeps_newer_ones(start_app, db_url, call_script):
    app = start_app(database_url=db_url, retention_days=7, webhook_url="http://127.0.0.1:9/hook")
    old, new = call_script("CA-old"), call_script("CA-new")
    old_file = _recorded_call(app, old, 8)
    new_file = _recorded_call(app, new, 6)
    app.flush()
    assert _outbox_rows(app) == 2  # one each: pending, or dead already (past the age budget)

    assert app.run(app.services.retention.sweep()) == 1
    assert httpx.get(app.url + "/v1/calls/CA-old", headers=ACME).status_code == 404
    old_messages = httpx.get(app.url + "/conversation/v1/conversation/messages?externalId=CA-old", headers=ACME)
    assert old_messages.status_code == 404
    assert not old_file.exists() and not old_file.parent.exists()
    assert _outbox_rows(app) == 1  # the old call's webhook went too

    detail = httpx.get(app.url + "/v1/calls/CA-new", headers=ACME).json()
    assert [r["role"] for r in detail["recordings"]] == ["customer"] and new_file.exists()
    items = httpx.get(app.url + "/conversation/v1/conversation/messages?externalId=CA-new", headers=ACME).json()
    assert [i["text"] for i in items["items"]] == ["said 6 days ago"]
    assert app.run(app.services.retention.sweep()) == 0
    assert app.run(app.services.retention.sweep(datetime.now(timezone.utc) + timedelta(days=2))) == 1
    metrics = httpx.get(app.url + "/metrics").text
    assert "callscribe_retention_deleted_calls_total 2.0" in metrics


def test_retention_zero_keeps_everything(start_app):
    app = start_app(retention_days=0)
    assert app.services.retention is None
