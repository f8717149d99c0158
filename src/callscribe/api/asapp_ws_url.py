"""POST /autotranscribe/v1/streaming-url: the URL of an ASAPP direct WebSocket stream.

Answers {"streamingUrl": "ws(s)://<public url>/autotranscribe/v1/stream?token=..."}, the token bound
to the caller's tenant and to the `externalId` of the body (connections with the same externalId are
the legs of one call), valid for five minutes. In a cluster the URL of an externalId names the node
of that call (callscribe.cluster.placement), so the legs asked for on different nodes meet.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from callscribe.api.errors import ApiError
from callscribe.api.limits import authorize, read_json
from callscribe.calls.media import MAX_GUID, valid_id
from callscribe.urls import asapp_stream_url

router = APIRouter(tags=["ASAPP direct WebSocket"])


@router.post("/autotranscribe/v1/streaming-url")
async def streaming_url(request: Request) -> dict[str, str]:
    key = authorize(request)
    settings = request.app.state.services.settings
    body = await read_json(request, settings.max_body_bytes, optional=True)
    external_id = None
    if body is not None:
        if not isinstance(body, dict):
            raise ApiError(400, "400-01", "Request body must be a JSON object")
        external_id = body.get("externalId")
        if external_id is not None and not valid_id(external_id, MAX_GUID):
            raise ApiError(400, "400-01", f"externalId must be a string of 1 to {MAX_GUID} printable characters")
    return {"streamingUrl": await asapp_stream_url(settings, key.tenant, external_id)}
