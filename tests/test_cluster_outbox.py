"""Cluster mode, the shared webhook outbox on PostgreSQL: dispatchers of several nodes claim due
heads with FOR UPDATE SKIP LOCKED and a lease, so a row is claimed by one at a time and one leg's
rows still go in order; a lease that runs out (its node died) makes the row due again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from callscribe.store import Store
from callscribe.store.models import OutboxRow
from cluster_helpers import pg_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url):
    s = Store(pg_url)
    s.db.migrate()
    yield s
    s.close()


def add_rows(store: Store, when: datetime) -> None:
    with store.db.sessions.begin() as s:
        for n in range(3):
            for leg in ("call-1:customer", "call-1:agent"):
                s.add(OutboxRow(msg_id=f"{leg}-{n}", ordering_key=leg, payload="{}", created_at=when,
                                attempts=0, next_attempt_at=when))


def test_claims_are_heads_leased_and_in_leg_order(store):
    now = datetime.now(timezone.utc)
    add_rows(store, now)
    lease = now + timedelta(seconds=60)
    first = store.outbox.claim_due(now, lease, 10)
    assert sorted(j.msg_id for j in first) == ["call-1:agent-0", "call-1:customer-0"]  # one head per leg
    assert store.outbox.claim_due(now, lease, 10) == []  # another node: leased, nothing more is due
    store.outbox.mark_delivered(first[0].id, 1, now)
    after = store.outbox.claim_due(now, lease, 10)
    assert [j.msg_id for j in after] == [first[0].ordering_key + "-1"]  # the next row of that leg only
    # The other head's node died mid-send: once its lease runs out, another node claims it again.
    later = store.outbox.claim_due(lease + timedelta(seconds=1), lease + timedelta(seconds=61), 10)
    assert first[1].msg_id in [j.msg_id for j in later]


def test_a_head_being_claimed_by_another_node_is_skipped_not_waited_for(store):
    now = datetime.now(timezone.utc)
    add_rows(store, now)
    with store.db.sessions.begin() as other:  # another node's claim, its transaction still open
        locked = other.scalars(select(OutboxRow).where(OutboxRow.msg_id == "call-1:agent-0")
                               .with_for_update()).one()
        assert locked is not None
        claimed = store.outbox.claim_due(now, now + timedelta(seconds=60), 10)
        assert [j.msg_id for j in claimed] == ["call-1:customer-0"]


def test_a_stopping_node_hands_back_what_it_was_sending(store):
    now = datetime.now(timezone.utc)
    add_rows(store, now)
    claimed = store.outbox.claim_due(now, now + timedelta(seconds=60), 10)
    assert store.outbox.make_due([j.id for j in claimed], now) == 2
    again = store.outbox.claim_due(now, now + timedelta(seconds=60), 10)
    assert sorted(j.msg_id for j in again) == sorted(j.msg_id for j in claimed)


def test_an_outcome_is_recorded_only_under_the_lease_that_claimed_the_row(store):
    """A node whose lease ran out mid-send (another node claimed and sent the row since) must not
    overwrite the other's outcome; the row's claim is the fence."""
    now = datetime.now(timezone.utc)
    add_rows(store, now)
    lease = now + timedelta(seconds=60)
    slow = {j.msg_id: j for j in store.outbox.claim_due(now, lease, 10)}["call-1:agent-0"]
    assert slow.next_attempt_at == lease  # a claimed job carries its lease
    later = lease + timedelta(seconds=1)
    retaken = {j.msg_id: j for j in store.outbox.claim_due(later, later + timedelta(seconds=60), 10)}["call-1:agent-0"]
    assert not store.outbox.mark_failed(slow.id, 1, later + timedelta(seconds=5), "timeout", lease=slow.next_attempt_at)
    assert not store.outbox.mark_dead(slow.id, 1, later, "refused", None, lease=slow.next_attempt_at)
    assert not store.outbox.mark_delivered(slow.id, 1, later, lease=slow.next_attempt_at)
    assert store.outbox.mark_delivered(retaken.id, 1, later, lease=retaken.next_attempt_at)
    with store.db.sessions() as s:
        row = s.get(OutboxRow, slow.id)
        assert row.delivered_at is not None and row.dead_at is None and row.last_error is None
    assert not store.outbox.mark_failed(retaken.id, 2, later, "late", lease=retaken.next_attempt_at)  # delivered


def test_a_stopping_node_hands_back_only_rows_still_under_its_lease(store):
    now = datetime.now(timezone.utc)
    add_rows(store, now)
    lease = now + timedelta(seconds=60)
    mine = store.outbox.claim_due(now, lease, 10)
    later = lease + timedelta(seconds=1)
    retaken = store.outbox.claim_due(later, later + timedelta(seconds=60), 1)  # once this node's lease ran out
    assert len(mine) == 2 and [j.id for j in retaken] == [mine[0].id]
    handed = store.outbox.make_due([j.id for j in mine], now, leases=[j.next_attempt_at for j in mine])
    assert handed == 1  # the row still under this node's lease; the other node's claim is left alone
    with store.db.sessions() as s:
        assert s.get(OutboxRow, retaken[0].id).next_attempt_at == retaken[0].next_attempt_at
