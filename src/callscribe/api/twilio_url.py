"""GET /mg-autotranscribe/v1/twilio-media-stream-url: where a Twilio <Stream> should connect.

Answers {"streamingUrl": "ws(s)://<public url>/mg-autotranscribe/v1/twilio-media?token=..."}, wss when
the public URL is https. The token is bound to the caller's tenant and valid for five minutes; it is
checked when a stream connects, so streams outlive it. Twilio documents that a <Stream> URL takes
no query string: a deployment that finds it dropped can pass the same token as a `token`
<Parameter>, which the stream endpoint accepts too.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from callscribe.api.limits import authorize
from callscribe.urls import twilio_stream_url

router = APIRouter()


@router.get("/mg-autotranscribe/v1/twilio-media-stream-url")
async def twilio_media_stream_url(request: Request) -> dict[str, str]:
    key = authorize(request)  # 401-01 without valid credentials, 429-01 over the rate limit
    return {"streamingUrl": twilio_stream_url(request.app.state.services.settings, key.tenant)}
