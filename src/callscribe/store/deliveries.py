"""Webhook deliveries of one call, read from the outbox table for the dashboard.

The outbox has no column for the call: its ordering key starts with the call id (`<call_id>:<leg>`),
and the payload is the JSON body that is sent, which names the sender. Rows are purged a while
after delivery (delivery.outbox.RetryPolicy.keep_delivered), so old calls show fewer of them.

A row is `delivered`, `pending` (not tried yet), `retrying` (tried and failed at least once;
`lastError` says why) or `dead` (refused by the receiver or past its retry budget: a dead letter,
replayable through /v1/webhooks/dead).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from callscribe.calls.media import MAX_GUID, valid_id
from callscribe.store.db import Database
from callscribe.store.models import Call, OutboxRow
from callscribe.store.repository import iso

MAX_ROWS = 500


def _status(row: OutboxRow) -> str:
    if row.delivered_at is not None:
        return "delivered"
    if row.dead_at is not None:
        return "dead"  # refused by the receiver or past the retry budget: a dead letter
    return "retrying" if row.attempts > 0 else "pending"


def _sender(payload: str) -> tuple[dict[str, Any], int | None, str | None]:
    """(sender, sequence, text) of a stored webhook body; empty values when it is not ours."""
    try:
        body = json.loads(payload)
    except ValueError:
        return {}, None, None
    if not isinstance(body, dict):
        return {}, None, None
    utterances = (body.get("autotranscribeResponse") or {}).get("utterance") or [{}]
    text = utterances[0].get("text") if isinstance(utterances[0], dict) else None
    sender = dict(body["sender"]) if isinstance(body.get("sender"), dict) else {}
    if isinstance(body.get("participant"), str):  # ASAPP's webhook names the participant beside the sender
        sender.setdefault("participant", body["participant"])
    return sender, body.get("sequence"), text


def call_deliveries(db: Database, tenant: str, guid: str, call_id: str | None = None) -> list[dict] | None:
    """The tenant's newest call with this guid (or exactly `call_id`): its webhook rows, oldest first.
    None when the tenant has no such call (another tenant's call looks the same)."""
    if not valid_id(guid, MAX_GUID):
        return None
    with db.sessions() as s:
        q = select(Call.call_id).where(Call.tenant == tenant, Call.guid == guid)
        if call_id is not None:
            q = q.where(Call.call_id == call_id)
        found = s.scalars(q.order_by(Call.created_at.desc()).limit(1)).first()
        if found is None:
            return None
        rows = s.scalars(select(OutboxRow)
                         .where(OutboxRow.ordering_key.startswith(f"{found}:", autoescape=True))
                         .order_by(OutboxRow.id.desc()).limit(MAX_ROWS)).all()
        out = []
        for r in reversed(rows):
            sender, seq, text = _sender(r.payload)
            out.append({"msgId": r.msg_id, "status": _status(r), "attempts": r.attempts,
                        "createdAt": iso(r.created_at), "deliveredAt": iso(r.delivered_at),
                        "nextAttemptAt": None if r.delivered_at else iso(r.next_attempt_at),
                        "lastError": r.last_error, "sequence": seq, "text": text,
                        "role": sender.get("role"), "participant": sender.get("participant"),
                        "externalId": sender.get("externalId")})
        return out
