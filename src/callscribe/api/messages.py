"""ASAPP transcript retrieval: GET /conversation/v1/conversation/messages?externalId=<guid>.

Answers `{"items": [{"text", "sender": {"role", "externalId"}, "messageId", "createdTimestamp",
"clientTimestamp"}]}`: the final utterances of every call of the caller's tenant with that guid,
across namespaces and legs, oldest first, at most 1,000 (ASAPP's limit; there is no pagination).
`createdTimestamp` is when callscribe produced the text; `clientTimestamp` is when it was said (the
call's media start plus the utterance's start offset). In "redacted_and_unredacted" mode an item
also carries `unredactedText`.

Errors (ASAPP shape): no externalId 400-01; bad credentials 401-01; an externalId the tenant has no
call for 404-01 (ASAPP lists 404 for this API; a call that exists but has no utterance yet answers
200 with an empty list). Another tenant's call is a 404 too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from callscribe.api.errors import ApiError
from callscribe.api.native import require_tenant
from callscribe.store.repository import MessageRecord, iso

router = APIRouter(tags=["asapp"])
MAX_MESSAGES = 1000


@router.get("/conversation/v1/conversation/messages")
async def list_messages(request: Request) -> dict:
    services, tenant = require_tenant(request)
    external_id = request.query_params.get("externalId")
    if not external_id:
        raise ApiError(400, "400-01", "externalId is required")
    items = await services.get_store().db.read(services.get_store().calls.messages, tenant, external_id, MAX_MESSAGES)
    if items is None:
        raise ApiError(404, "404-01", "No conversation with this externalId")
    return {"items": [message_item(m) for m in items]}


def message_item(m: MessageRecord) -> dict[str, Any]:
    item = {"text": m.text, "sender": {"role": m.role, "externalId": m.external_id},
            "messageId": f"{m.call_id}-{m.seq}", "createdTimestamp": iso(m.created_at),
            "clientTimestamp": iso(m.spoken_at)}
    if m.redaction_output == "redacted_and_unredacted" and m.unredacted_text is not None:
        item["unredactedText"] = m.unredacted_text
    return item
