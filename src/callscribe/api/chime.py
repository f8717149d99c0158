"""The Chime SDK meetings REST surface, as boto3's `chime-sdk-meetings` client calls it with
`endpoint_url` (specs/control-apis.md §C; botocore's service model is the reference for shapes).

Every request is SigV4-signed (chime_sigv4.py) with a configured key pair; meetings belong to the
tenant of the key that created them, and another tenant's meeting is NotFound. Inputs are checked
against the model (chime_model.py); meetings and attendees live in the MeetingBook (chime_book.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from callscribe.api.chime_book import LimitExceeded, Meeting, MeetingBook
from callscribe.api.chime_model import parse_input
from callscribe.api.chime_settings import parse_configuration
from callscribe.api.chime_sigv4 import verify
from callscribe.api.chime_wire import attendee_object, meeting_object
from callscribe.api.errors import ApiError
from callscribe.api.limits import FailureWindow, limits_of, read_body
from callscribe.config import ApiKey

router = APIRouter(tags=["Chime SDK meetings"])
MAX_PAGE = 100
_GUID = re.compile(r"[a-f0-9]{8}(-[a-f0-9]{4}){3}-[a-f0-9]{12}")


def book_of(request: Any) -> MeetingBook:
    book: MeetingBook = request.app.state.chime_meetings
    return book


def _failures(request: Request) -> FailureWindow:
    """Refused signatures per address. AWS answers most of them 403, which the app-wide throttle
    (it counts 401s) does not see; without this, guessing a secret through this surface would be free."""
    window = getattr(request.app.state, "chime_auth_failures", None)
    if window is None:
        window = request.app.state.chime_auth_failures = FailureWindow(
            request.app.state.services.settings.auth_failures_per_minute)
    return window


async def _signed(request: Request) -> tuple[ApiKey, bytes]:
    """The caller's key (SigV4) and the raw body, after the key's rate limit."""
    services = request.app.state.services
    source = request.client.host if request.client else "unknown"
    blocked = _failures(request).blocked_for(source)
    if blocked > 0:
        raise ApiError(429, "ThrottlingException", "Too many failed authentications from this address",
                       headers={"Retry-After": str(max(1, math.ceil(blocked)))})
    body = await read_body(request, services.settings.max_body_bytes)
    scheme = request.url.scheme
    host = request.headers.get("host") or request.url.netloc
    raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    raw_query = request.scope.get("query_string", b"").decode("latin-1")
    try:
        key = verify(services.api_keys, request.method, f"{scheme}://{host}", raw_path, raw_query, request.headers,
                     body)
    except ApiError as refused:
        if refused.status == 403:  # 401s are counted by the app-wide throttle already
            _failures(request).record(source)
        raise
    wait = limits_of(request.app).rate.take(key.id)
    if wait > 0:
        raise ApiError(429, "ThrottlingException", "Rate exceeded",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return key, body


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "BadRequestException", "The request body is not valid JSON") from None


async def _input(request: Request, op: str, **path: str) -> tuple[ApiKey, dict[str, Any]]:
    key, body = await _signed(request)
    return key, _parse(request, body, op, **path)


def _parse(request: Request, body: bytes, op: str, **path: str) -> dict[str, Any]:
    return parse_input(op, path, dict(request.query_params), _json(body))


def _meeting(request: Request, key: ApiKey, meeting_id: str) -> Meeting:
    m = book_of(request).get(key.tenant, meeting_id)
    if m is None:
        raise ApiError(404, "NotFoundException", f"The meeting {meeting_id} is not found")
    return m


def _urls(request: Request) -> tuple[str, str]:
    settings = request.app.state.services.settings
    return settings.resolved_public_url.rstrip("/"), settings.public_ws_url.rstrip("/")


def _limit(exc: LimitExceeded) -> ApiError:
    return ApiError(400, "LimitExceededException", str(exc))


@router.post("/meetings", include_in_schema=False)
async def create_meeting(request: Request) -> JSONResponse:
    key, req = await _input(request, "CreateMeeting")
    try:
        m = book_of(request).create_meeting(key.tenant, req)
    except LimitExceeded as exc:
        raise _limit(exc) from None
    return JSONResponse({"Meeting": meeting_object(m, *_urls(request))})


@router.get("/meetings/{MeetingId}", include_in_schema=False)
async def get_meeting(request: Request, MeetingId: str) -> JSONResponse:
    key, req = await _input(request, "GetMeeting", MeetingId=MeetingId)
    return JSONResponse({"Meeting": meeting_object(_meeting(request, key, req["MeetingId"]), *_urls(request))})


@router.delete("/meetings/{MeetingId}", include_in_schema=False)
async def delete_meeting(request: Request, MeetingId: str) -> Response:
    key, req = await _input(request, "DeleteMeeting", MeetingId=MeetingId)
    await book_of(request).delete_meeting(_meeting(request, key, req["MeetingId"]))
    return Response(status_code=204)


@router.post("/meetings/{MeetingId}/attendees", include_in_schema=False)
async def create_attendee(request: Request, MeetingId: str) -> JSONResponse:
    key, body = await _signed(request)  # an unsigned caller hears 401 before anything about its input
    batch = request.query_params.get("operation") == "batch-create"
    if "operation" in request.query_params and not batch:
        raise ApiError(400, "BadRequestException", "operation must be batch-create")
    req = _parse(request, body, "BatchCreateAttendee" if batch else "CreateAttendee", MeetingId=MeetingId)
    book = book_of(request)
    m = _meeting(request, key, req["MeetingId"])
    if not batch:
        try:
            a = book.add_attendee(m, req["ExternalUserId"], req.get("Capabilities"))
        except LimitExceeded as exc:
            raise _limit(exc) from None
        return JSONResponse({"Attendee": attendee_object(a)})
    attendees, errors = [], []
    for item in req["Attendees"]:
        try:
            attendees.append(attendee_object(book.add_attendee(m, item["ExternalUserId"], item.get("Capabilities"))))
        except LimitExceeded as exc:
            errors.append({"ExternalUserId": item["ExternalUserId"], "ErrorCode": "LimitExceeded",
                           "ErrorMessage": str(exc)})
    return JSONResponse({"Attendees": attendees, "Errors": errors})


@router.get("/meetings/{MeetingId}/attendees", include_in_schema=False)
async def list_attendees(request: Request, MeetingId: str) -> JSONResponse:
    key, req = await _input(request, "ListAttendees", MeetingId=MeetingId)
    m = _meeting(request, key, req["MeetingId"])
    every = sorted(m.attendees.values(), key=lambda a: a.attendee_id)
    after = req.get("NextToken")
    # The token is the last attendee id of the previous page; that attendee may have been deleted
    # since, and the listing goes on after where it stood.
    if after is not None and not _GUID.fullmatch(after):
        raise ApiError(400, "BadRequestException", "NextToken is not valid")
    if after is not None:
        every = [a for a in every if a.attendee_id > after]
    page = every[:req.get("MaxResults") or MAX_PAGE]
    body: dict[str, Any] = {"Attendees": [attendee_object(a) for a in page]}
    if len(every) > len(page):
        body["NextToken"] = page[-1].attendee_id
    return JSONResponse(body)


@router.get("/meetings/{MeetingId}/attendees/{AttendeeId}", include_in_schema=False)
async def get_attendee(request: Request, MeetingId: str, AttendeeId: str) -> JSONResponse:
    key, req = await _input(request, "GetAttendee", MeetingId=MeetingId, AttendeeId=AttendeeId)
    m = _meeting(request, key, req["MeetingId"])
    a = m.attendees.get(req["AttendeeId"].lower())
    if a is None:
        raise ApiError(404, "NotFoundException", f"The attendee {AttendeeId} is not found")
    return JSONResponse({"Attendee": attendee_object(a)})


@router.delete("/meetings/{MeetingId}/attendees/{AttendeeId}", include_in_schema=False)
async def delete_attendee(request: Request, MeetingId: str, AttendeeId: str) -> Response:
    key, req = await _input(request, "DeleteAttendee", MeetingId=MeetingId, AttendeeId=AttendeeId)
    m = _meeting(request, key, req["MeetingId"])
    if req["AttendeeId"].lower() not in m.attendees:
        raise ApiError(404, "NotFoundException", f"The attendee {AttendeeId} is not found")
    await book_of(request).delete_attendee(m, req["AttendeeId"].lower())
    return Response(status_code=204)


@router.post("/meetings/{MeetingId}/transcription", include_in_schema=False)
async def transcription(request: Request, MeetingId: str) -> Response:
    key, body = await _signed(request)  # an unsigned caller hears 401 before anything about its input
    op = request.query_params.get("operation")
    if op not in ("start", "stop"):
        raise ApiError(400, "BadRequestException", "operation must be start or stop")
    req = _parse(request, body, "StartMeetingTranscription" if op == "start" else "StopMeetingTranscription",
                 MeetingId=MeetingId)
    m = _meeting(request, key, req["MeetingId"])
    book = book_of(request)
    if op == "stop":
        await book.stop_transcription(m)
        return Response(status_code=200)
    settings = parse_configuration(req["TranscriptionConfiguration"])
    services = request.app.state.services
    if not services.ready.is_set() or services.registry is None:
        raise ApiError(503, "ServiceUnavailableException", "The speech model is still loading",
                       headers={"Retry-After": "5"})
    await book.start_transcription(m, settings)
    return Response(status_code=200)
