"""ASAPP AutoTranscribe Media Gateway control: POST /mg-autotranscribe/v1/start-streaming and
/stop-streaming, in the wire shapes of seeds 000 and 001.

Error codes (ASAPP shape, fresh requestId each):
- 400-01: body not JSON, not an object, a required field missing, or a field of the wrong JSON type;
- 400-201: an unknown value of a media-gateway parameter (namespace, siprecParams.mediaLineOrder,
  twilioParams.trackMap.*, amazonConnectParams.startSelectorType) or an unusable guid: the
  spec's wording for 400-201 is "MG transcription API parameter incorrect"; also, at once, a
  namespace of the seed whose media this server does not take yet (`SERVED_NAMESPACES`), with a
  message that names it: nothing answers success for a call that cannot arrive; a malformed
  amazonConnectParams.streamArn or afterFragmentNumber; a Kinesis stream that cannot be read as
  given (no such stream, not allowed);
- 400-202: an unknown value or bad combination of AutoTranscribe parameters (redactionOutput not in
  its enum; detailedToken true with a redacting redactionOutput; FRAGMENT_NUMBER without
  afterFragmentNumber; a trackMap giving both tracks the same role);
- 400-203: no such call (after waiting settings.start_wait_for_media_s for its media on start, or
  kvs_start_timeout_s for an amazonconnect stream's first Connect audio); a call of another tenant is
  indistinguishable from one that does not exist;
- 409-201: already started / already stopped; 409-202: another request for the same guid is in progress;
  409-203: a start while the call's media is ending (hang-up or SIPREC BYE being processed; a stop
  then waits and reports the interval the hang-up closed);
- 500-201: an amazonconnect pull failed for another reason (AWS unreachable or failing): retryable;
- 401-01, 413-01, 429-01 (Retry-After): see api/limits.py;
- 503-01: the speech model is not loaded, or the scheduler cannot take all of the call's legs (or, in
  a cluster, the node holding the call did not answer a forwarded start or stop). A start
  is all or nothing: half a call transcribed is worse than a refusal the client can retry, so
  capacity is never reported as a per-leg 5002 here (the direct WebSocket, one leg per connection,
  uses 5002).
An unsupported `language` is not an HTTP error: the answer is 200 with isOk false and status 4050 on
each leg (no streamId, nothing started), as the seed puts statuses per leg.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from callscribe.api.asapp_wire import ROLES, SURFACE, track_participants
from callscribe.api.errors import ApiError
from callscribe.api.limits import authorize, limits_of, read_json
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MAX_EXTERNAL_ID, SOURCE_ERROR_EVENT, PulledSource, valid_id
from callscribe.calls.redaction import REDACTION_OUTPUTS
from callscribe.calls.registry import (AlreadyStarted, AlreadyStopped, BadIdentity, CallNotFound, CallRegistry,
                                       MediaEnding, NoCapacity, NotReady, ShuttingDown, SourceFailed,
                                       UnsupportedLanguage)

router = APIRouter(tags=["ASAPP media gateway"])

NAMESPACES = ("siprec", "twilio", "amazonconnect", "genesysaudiohook")
SERVED_NAMESPACES = ("twilio", "amazonconnect", "genesysaudiohook", "siprec")  # all of them
MEDIA_LINE_ORDERS = ("CUSTOMER_FIRST", "AGENT_FIRST")
START_SELECTORS = ("NOW", "FRAGMENT_NUMBER")
_GUID = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces: every vendor's call id fits
OK = {"code": 1000, "description": "OK"}


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _field(obj: dict, name: str, kind: type | tuple[type, ...], where: str, *, required: bool = False,
           default: Any = None) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise _bad("400-01", f"{where}{name} is required")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names: dict[Any, str] = {str: "a string", bool: "a boolean", dict: "an object"}
        raise _bad("400-01", f"{where}{name} must be {names.get(kind, 'of another type')}")
    return value


def _enum(value: Any, allowed: tuple[str, ...], name: str, code: str) -> Any:
    if value is not None and value not in allowed:
        raise _bad(code, f"{name} must be one of {', '.join(allowed)}")
    return value


def _call_target(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise _bad("400-01", "Request body must be a JSON object")
    namespace = _field(body, "namespace", str, "", required=True)
    guid = _field(body, "guid", str, "", required=True)
    _enum(namespace, NAMESPACES, "namespace", "400-201")
    if namespace not in SERVED_NAMESPACES:
        raise _bad("400-201", f"namespace {namespace} is not supported by this server yet "
                              f"(supported: {', '.join(SERVED_NAMESPACES)})")
    if not _GUID.match(guid):
        raise _bad("400-201", "guid must be 1 to 255 printable characters without spaces")
    return namespace, guid


def parse_start(body: Any) -> tuple[str, str, StreamParams]:
    """(namespace, guid, params) of a start-streaming body, or ApiError."""
    namespace, guid = _call_target(body)
    customer_id = _field(body, "customerId", str, "", required=True)
    agent_id = _field(body, "agentId", str, "", required=True)
    for name, value in (("customerId", customer_id), ("agentId", agent_id)):
        if not valid_id(value, MAX_EXTERNAL_ID):
            raise _bad("400-01", f"{name} must be 1 to {MAX_EXTERNAL_ID} printable characters")

    at = _field(body, "autotranscribeParams", dict, "", default={})
    language = _field(at, "language", str, "autotranscribeParams.", default="en-US")
    detailed = _field(at, "detailedToken", bool, "autotranscribeParams.", default=False)
    recording = _field(at, "audioRecordingAllowed", bool, "autotranscribeParams.", default=False)
    redaction = _field(at, "redactionOutput", str, "autotranscribeParams.", default="redacted")
    _enum(redaction, REDACTION_OUTPUTS, "autotranscribeParams.redactionOutput", "400-202")
    if detailed and redaction != "unredacted":
        raise _bad("400-202", "detailedToken true requires redactionOutput unredacted")

    sp = _field(body, "siprecParams", dict, "", default={})
    order = _field(sp, "mediaLineOrder", str, "siprecParams.", default="CUSTOMER_FIRST")
    _enum(order, MEDIA_LINE_ORDERS, "siprecParams.mediaLineOrder", "400-201")

    tp = _field(body, "twilioParams", dict, "", default={})
    tm = _field(tp, "trackMap", dict, "twilioParams.", default={})
    inbound = _field(tm, "inbound", str, "twilioParams.trackMap.", default="customer")
    outbound = _field(tm, "outbound", str, "twilioParams.trackMap.", default="agent")
    _enum(inbound, ROLES, "twilioParams.trackMap.inbound", "400-201")
    _enum(outbound, ROLES, "twilioParams.trackMap.outbound", "400-201")
    if namespace == "twilio" and inbound == outbound:
        raise _bad("400-202", "twilioParams.trackMap must give inbound and outbound different roles")

    options: dict[str, Any] = {"customer_id": customer_id, "agent_id": agent_id}
    if namespace == "twilio":
        options["twilio_track_map"] = {"inbound": inbound, "outbound": outbound}
    _pull_params(body, namespace)  # checked here; start_streaming builds the pull from it

    external_ids = {"customer": customer_id, "agent": agent_id}
    params = StreamParams(
        language=language, detailed_token=detailed, audio_recording_allowed=recording, redaction_output=redaction,
        surface=SURFACE, external_ids=external_ids, options=options,
        participants=track_participants(namespace, track_map={"inbound": inbound, "outbound": outbound},
                                        media_line_order=order, external_ids=external_ids),
    )
    return namespace, guid, params


def _pull_params(body: dict, namespace: str) -> dict[str, Any] | None:
    """amazonConnectParams, checked for shape; None without them. Only an amazonconnect call reads
    the stream, so only there do they name a source."""
    ac = _field(body, "amazonConnectParams", dict, "", default=None)
    if ac is None:
        return None
    arn = _field(ac, "streamArn", str, "amazonConnectParams.", required=namespace == "amazonconnect")
    selector = _field(ac, "startSelectorType", str, "amazonConnectParams.", default="NOW")
    after = _field(ac, "afterFragmentNumber", str, "amazonConnectParams.")
    _enum(selector, START_SELECTORS, "amazonConnectParams.startSelectorType", "400-201")
    if selector == "FRAGMENT_NUMBER" and not after:
        raise _bad("400-202", "amazonConnectParams.afterFragmentNumber is required with FRAGMENT_NUMBER")
    if namespace != "amazonconnect":
        return None
    return {"streamArn": arn, "startSelectorType": selector, "afterFragmentNumber": after}


def _pulled_source(request: Request, body: dict, namespace: str) -> PulledSource | None:
    """The source a start names (an amazonconnect stream), built by the factory the app registered
    for the namespace; started by the registry only if the call has no media yet."""
    params = _pull_params(body, namespace)
    if params is None:
        return None
    factory = request.app.state.services.sources.get(namespace)
    if factory is None:
        raise _bad("400-201", f"namespace {namespace} cannot pull media on this server")
    try:
        return factory(params)
    except ValueError as exc:
        raise _bad("400-201", str(exc)) from None


def _source_failed(exc: SourceFailed) -> ApiError:
    """A pull that could not connect: 400-201 when the source as given cannot be read (no such
    stream, not allowed: a parameter incorrect, retrying will not help), 400-203 when it carries no
    audio in time (as for any call whose media never arrives), 500-201 otherwise (the source's
    service unreachable or failing: an internal error the client may retry)."""
    if exc.kind == "unusable":
        return ApiError(400, "400-201", f"amazonConnectParams.streamArn cannot be read: {exc}")
    if exc.kind == "no-media":
        return ApiError(400, "400-203", f"No call with this guid: {exc}")
    return ApiError(500, "500-201", f"The call's media could not be fetched: {exc}")


def _source_error(view: dict[str, Any] | None) -> str | None:
    """The error a pulled source ended the call's media with, from the registry's view of the call."""
    if view is None or view.get("media") != "ended":
        return None
    for event in reversed(view.get("protocol_events", [])):
        if event.get("name") == SOURCE_ERROR_EVENT:
            return str(event.get("data", {}).get("reason", "")) or None
    return None


def _registry(request: Request) -> CallRegistry:
    registry = request.app.state.services.registry
    if registry is None:
        raise ApiError(503, "503-01", "Service Unavailable")
    return registry


@router.post("/mg-autotranscribe/v1/start-streaming")
async def start_streaming(request: Request) -> JSONResponse:
    """Start (or resume) transcription of a call: a new streamId per leg.

    Waits up to start_wait_for_media_s for the call's media; 200 with per-leg status 1000, or 4050
    on every leg (isOk false) for an unsupported language; errors as in the module docstring.
    """
    key = authorize(request)
    services = request.app.state.services
    body = await read_json(request, services.settings.max_body_bytes)
    namespace, guid, params = parse_start(body)
    registry = _registry(request)
    source = _pulled_source(request, body, namespace)
    async with limits_of(request.app).in_flight.hold((key.tenant, namespace, guid)):
        try:
            legs = await registry.start_streaming(key.tenant, namespace, guid, params,
                                                  wait_s=services.settings.start_wait_for_media_s, source=source)
        except UnsupportedLanguage:
            status = {"code": 4050, "description": f"language not supported: {params.language}"}
            return JSONResponse({"isOk": False, "errorMessage": status["description"],
                                 "autotranscribeResponse": {r: {"status": status} for r in ROLES}})
        except CallNotFound:
            raise ApiError(400, "400-203", "No call with this guid") from None
        except AlreadyStarted:
            raise ApiError(409, "409-201", "Transcription already started") from None
        except MediaEnding:
            raise ApiError(409, "409-203", "The call's media is ending") from None
        except (NoCapacity, NotReady):
            raise ApiError(503, "503-01", "No transcription capacity available") from None
        except ShuttingDown:
            raise ApiError(503, "503-01", "The server is shutting down") from None
        except BadIdentity as exc:
            raise ApiError(400, "400-01", str(exc)) from None
        except SourceFailed as exc:
            raise _source_failed(exc) from None
    return JSONResponse({"isOk": True, "autotranscribeResponse": {
        leg.role: {"streamId": leg.stream_id, "status": OK} for leg in legs.values()}})


@router.post("/mg-autotranscribe/v1/stop-streaming")
async def stop_streaming(request: Request) -> JSONResponse:
    """Stop (pause or end) transcription of a call. Audio received before the stop is still
    transcribed; the answer comes once its last final is out, with each leg's summary of the interval.
    A stop after the call hung up reports, once, the interval the hang-up closed (with status 5000 on
    its legs when a Kinesis Video error ended an amazonconnect pull)."""
    key = authorize(request)
    services = request.app.state.services
    body = await read_json(request, services.settings.max_body_bytes)
    namespace, guid = _call_target(body)
    registry = _registry(request)
    async with limits_of(request.app).in_flight.hold((key.tenant, namespace, guid)):
        try:
            legs = await registry.stop_streaming(key.tenant, namespace, guid)
        except CallNotFound:
            raise ApiError(400, "400-203", "No call with this guid") from None
        except AlreadyStopped:
            raise ApiError(409, "409-201", "Transcription already stopped") from None
        except NotReady:  # cluster: the node holding the call did not answer; as one node not ready
            raise ApiError(503, "503-01", "Service Unavailable") from None
    status = OK
    error = _source_error(registry.get_call(key.tenant, guid, namespace))
    if error is not None:  # the legs this stop reports were closed by a Kinesis error
        status = {"code": 5000, "description": f"media stream error: {error}"}
    return JSONResponse({"isOk": True, "autotranscribeResponse": {
        leg.role: {"streamId": leg.stream_id, "status": status, "summary": leg.summary().as_camel()}
        for leg in legs.values()}})
