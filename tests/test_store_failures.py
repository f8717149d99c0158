"""Storage that refuses loudly, against the running app: a refused row is reported and its
neighbours stored; a database outage turns /readyz to 503, readers do not hang, and storing
resumes (losing nothing queued) when the database is back."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}


def _messages(app, guid: str) -> list[str]:
    r = httpx.get(app.url + "/conversation/v1/conversation/messages", params={"externalId": guid}, headers=ACME)
    return [item["text"] for item in r.json()["items"]] if r.status_code == 200 else []


def _metric(app, name: str) -> float:
    async def render() -> bytes:
        return app.services.metrics.render()

    lines = app.run(render()).decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def test_a_refused_row_is_logged_counted_and_reported_and_its_neighbours_stored(start_app, db_url, call_script,
                                                                              caplog):
    app = start_app(database_url=db_url)
    c = call_script("CA-refused")
    one = c.utterance("customer", "one")
    with caplog.at_level(logging.ERROR, logger="callscribe.delivery.persister"):
        app.publish(c.state("media-connected"), c.started(), one, one, c.utterance("customer", "three"))
        app.flush()
    assert _messages(app, "CA-refused") == ["one", "three"]  # the duplicate alone is refused
    assert app.services.persister.store_failures(c.ref.call_id) == 1
    assert _metric(app, 'callscribe_store_failures_total{reason="refused"}') == 1
    assert any(f"not stored: UtteranceEvent seq {one.seq}" in r.getMessage() for r in caplog.records)
    assert app.services.persister.store_healthy  # the database answered: refusing a row is not an outage


@pytest.mark.postgres
def test_a_database_outage_is_not_ready_then_recovers_with_nothing_lost(start_app, pg_server, call_script,
                                                                        wait_until, monkeypatch):
    import pg

    from callscribe.delivery import persister as persister_module

    with pg.fresh_database(pg_server) as url:
        name = make_url(url).database
        admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")

        def connections(allowed: bool) -> None:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
                if not allowed:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                                 {"n": name})

        try:
            app = start_app(database_url=url)
            c = call_script("CA-outage")
            app.publish(c.state("media-connected"), c.started(), c.utterance("agent", "before"))
            app.flush()
            connections(False)
            app.publish(c.utterance("agent", "during"), c.utterance("customer", "also during"))
            wait_until(lambda: httpx.get(app.url + "/readyz").json()["status"] == "store-unavailable", "503")
            assert httpx.get(app.url + "/readyz").status_code == 503
            assert not app.services.persister.store_healthy
            assert _metric(app, "callscribe_store_healthy") == 0
            app.flush()  # returns during the outage: readers waiting for stored events do not hang

            # The queue is bounded: past it, events are refused, counted and reported, not hoarded.
            monkeypatch.setattr(persister_module, "_QUEUE_MAX", 2)
            app.publish(*(c.utterance("agent", f"queued {i}") for i in range(4)))
            assert app.services.persister.store_failures(c.ref.call_id) == 2
            assert _metric(app, 'callscribe_store_failures_total{reason="queue_full"}') == 2

            connections(True)
            wait_until(lambda: app.services.persister.store_healthy, "storing resumed")
            assert httpx.get(app.url + "/readyz").json()["status"] != "store-unavailable"
            app.flush()
            assert _messages(app, "CA-outage") == ["before", "during", "also during", "queued 0", "queued 1"]
        finally:
            connections(True)
            admin.dispose()
