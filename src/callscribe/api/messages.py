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

from fastapi import APIRouter, Request

from callscribe.api.errors import AsappError
from callscribe.api.native import require_tenant

router = APIRouter(tags=["asapp"])
MAX_MESSAGES = 1000


@router.get("/conversation/v1/conversation/messages")
async def list_messages(request: Request) -> dict:
    services, tenant = require_tenant(request)
    external_id = request.query_params.get("externalId")
    if not external_id:
        raise AsappError(400, "400-01", "externalId is required")
    items = await services.store.db.read(services.store.calls.messages, tenant, external_id, MAX_MESSAGES)
    if items is None:
        raise AsappError(404, "404-01", "No conversation with this externalId")
    return {"items": items}
