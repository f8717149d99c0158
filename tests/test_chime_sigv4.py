"""SigV4 verification of the Chime surface (api/chime_sigv4.py) on requests signed by botocore's own
signer: the signed payload hash must be the body's, and the clock window is AWS's 5 minutes."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.datastructures import Headers

from callscribe.api.chime_sigv4 import verify
from callscribe.api.errors import ApiError
from callscribe.config import ApiKey

KEYS = [ApiKey("ka", "sa", "acme")]
HOST = "http://127.0.0.1:9"
BODY = b'{"ClientRequestToken":"t-1","MediaRegion":"us-east-1","ExternalMeetingId":"ext"}'


def signed(body: bytes, content_sha: str | None = None) -> dict[str, str]:
    headers = {"Host": "127.0.0.1:9", "Content-Type": "application/json"}
    if content_sha is not None:
        headers["X-Amz-Content-SHA256"] = content_sha
    request = AWSRequest(method="POST", url=f"{HOST}/meetings", data=body, headers=headers)
    SigV4Auth(Credentials("ka", "sa"), "chime", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def check(headers: dict[str, str], body: bytes, now: datetime | None = None) -> ApiKey:
    return verify(KEYS, "POST", HOST, "/meetings", "", Headers(headers=headers), body, now=now)


def test_signed_payload_hash_must_be_the_bodys():
    assert check(signed(BODY), BODY).tenant == "acme"
    good = hashlib.sha256(BODY).hexdigest()
    assert check(signed(BODY, good), BODY).tenant == "acme"
    # The signature covers the header, not the body: a changed body under the same header is refused.
    with pytest.raises(ApiError) as info:
        check(signed(BODY, good), BODY.replace(b"ext", b"evil"))
    assert (info.value.status, info.value.code) == (403, "ForbiddenException")
    for unsigned in ("UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"):
        with pytest.raises(ApiError) as info:
            check(signed(BODY, unsigned), BODY)
        assert (info.value.status, info.value.code) == (403, "ForbiddenException")


def test_clock_window_is_five_minutes():
    headers = signed(BODY)
    when = datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert check(headers, BODY, now=when + timedelta(minutes=4)).tenant == "acme"
    for off in (timedelta(minutes=6), -timedelta(minutes=6)):
        with pytest.raises(ApiError) as info:
            check(headers, BODY, now=when + off)
        assert info.value.status == 403
