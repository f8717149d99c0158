"""AWS Signature Version 4 verification for the Chime surface.

The access key id is a configured key's id and the secret access key its secret. The signature is
recomputed here with botocore's own signer (`SigV4Auth`) over the request as it arrived (raw path
and query, the headers the client says it signed, the body), at the client's `X-Amz-Date`, in the
region of its credential scope; the client's signature is only compared, never trusted.

Answers, as AWS gives them: no or malformed Authorization -> 401 UnauthorizedException (and the
Chime model has no code of its own for the rest); an unknown key, a signature that does not match,
a service other than `chime` in the scope, or a date more than 5 minutes off (AWS's window) -> 403
ForbiddenException. When the client signs `x-amz-content-sha256`, botocore's canonical request uses
that header instead of hashing the body, so the header must equal sha256(body): otherwise a changed
body, UNSIGNED-PAYLOAD or STREAMING-* would pass with a valid signature (403 as well).

No replay cache: botocore re-signs each retry, and a retry within the same second carries the same
date and therefore the same signature, so refusing repeats would refuse honest retries; the
5-minute window bounds replays instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from typing import Mapping, Sequence

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from callscribe.api.chime_model import SIGNING_NAME
from callscribe.api.errors import ApiError
from callscribe.config import ApiKey

MAX_SKEW_S = 5 * 60
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})\s*$")
_DATE = re.compile(r"\d{8}T\d{6}Z")
_DUMMY = ApiKey("-", "dummy-secret-for-constant-work")


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "ForbiddenException", message)


def verify(keys: Sequence[ApiKey], method: str, host_url: str, raw_path: str, raw_query: str,
           headers: Mapping[str, str], body: bytes, now: datetime | None = None) -> ApiKey:
    """The key that signed this request, or ApiError 401/403. `headers` must be case-insensitive
    (Starlette's), `host_url` the scheme and host the client addressed (for a request without a
    signed Host header)."""
    auth = headers.get("authorization")
    if not auth:
        raise ApiError(401, "UnauthorizedException", "Missing Authentication Token")
    match = _AUTH.match(auth.strip())
    if match is None:
        raise ApiError(401, "UnauthorizedException", "Authorization header is not a valid AWS SigV4 signature")
    credential, signed, given = match.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise ApiError(401, "UnauthorizedException", "Credential must be AKID/date/region/service/aws4_request")
    access_key, day, region, service = parts[:4]
    if service != SIGNING_NAME:
        raise _forbidden(f"Credential should be scoped to correct service: '{SIGNING_NAME}'.")
    stamp = headers.get("x-amz-date") or ""
    if not _DATE.fullmatch(stamp) or stamp[:8] != day:
        raise _forbidden("X-Amz-Date is missing or does not match the credential scope")
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    skew = abs(((now or datetime.now(timezone.utc)) - when).total_seconds())
    if skew > MAX_SKEW_S:
        raise _forbidden("Signature expired: the request time is more than 5 minutes from the server time")
    names = signed.split(";")
    if "host" not in names or any(headers.get(n) is None for n in names):
        raise _forbidden("The request signature must cover the Host header and every header it names")

    key = next((k for k in keys if hmac.compare_digest(k.id.encode(), access_key.encode())), None)
    request = AWSRequest(method=method.upper(), url=host_url + raw_path + (f"?{raw_query}" if raw_query else ""),
                         headers={n: headers[n] for n in names}, data=body)
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, (key or _DUMMY).secret), SIGNING_NAME, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if key is None:
        raise _forbidden("The security token included in the request is invalid.")
    if not hmac.compare_digest(expected, given):
        raise _forbidden("The request signature we calculated does not match the signature you provided. "
                         "Check your AWS Secret Access Key and signing method.")
    claimed = headers.get("x-amz-content-sha256") if "x-amz-content-sha256" in names else None
    if claimed is not None and not hmac.compare_digest(claimed.strip().lower().encode(),
                                                      hashlib.sha256(body).hexdigest().encode()):
        raise _forbidden("The provided 'x-amz-content-sha256' header does not match what was computed: "
                         "the payload must be signed with its SHA-256 (no UNSIGNED-PAYLOAD or streaming).")
    return key
