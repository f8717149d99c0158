"""Webhook dead letters on the native API: list them, and replay one.

    GET  /v1/webhooks/dead?limit=100&before=<id>   newest first: {"deadLetters": [...], "next": <id>|null}
    POST /v1/webhooks/dead/{id}/replay             202: the row is pending again and due now

A dead letter is a webhook the receiver refused (a 4xx other than 408/429) or that ran out of its
retry budget (see `callscribe.delivery.outbox`). Each belongs to a call, and a tenant sees only its
own calls' dead letters: another tenant's looks exactly like one that does not exist (404-01).
Auth and error shape are those of the rest of the native API.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from callscribe.api.errors import ApiError
from callscribe.api.native import require_tenant
from callscribe.store.outbox import DeadLetter
from callscribe.store.repository import iso

router = APIRouter(tags=["native"])
_MAX_ID = 2**63 - 1  # the column is a BIGINT: a larger id is a 400, not a database error


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    try:
        payload: Any = json.loads(letter.payload)
    except ValueError:
        payload = letter.payload
    return {"id": letter.id, "webhookId": letter.msg_id, "callId": letter.call_id, "guid": letter.guid,
            "attempts": letter.attempts, "lastError": letter.last_error, "createdAt": iso(letter.created_at),
            "deadAt": iso(letter.dead_at), "payload": payload}


@router.get("/v1/webhooks/dead")
async def list_dead_letters(request: Request, limit: int = Query(100, ge=1, le=1000),
                            before: int | None = Query(None, ge=1, le=_MAX_ID)) -> dict:
    services, tenant = require_tenant(request)
    outbox = services.get_store().outbox
    letters = await services.get_store().db.read(outbox.dead_letters, tenant, limit, before)
    return {"deadLetters": [_letter_json(x) for x in letters],
            "next": letters[-1].id if len(letters) == limit else None}


@router.post("/v1/webhooks/dead/{letter_id}/replay", status_code=202)
async def replay_dead_letter(request: Request, letter_id: int = Path(ge=1, le=_MAX_ID)) -> JSONResponse:
    services, tenant = require_tenant(request)
    if services.webhooks is None:
        raise ApiError(409, "409-01", "Webhooks are not configured (CALLSCRIBE_WEBHOOK_URL)")
    replayed = await services.get_store().db.write(services.get_store().outbox.replay, tenant, letter_id,
                                             datetime.now(timezone.utc))
    if not replayed:
        raise ApiError(404, "404-01", "No such dead letter")
    services.webhooks.wake()
    return JSONResponse({"id": letter_id, "status": "pending"}, status_code=202)
