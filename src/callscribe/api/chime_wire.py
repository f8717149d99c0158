"""The Chime SDK meetings surface's wire shapes: names and paths, the error body, the Meeting and
Attendee objects of the REST answers, and the lifecycle webhook (specs/control-apis.md §C).

Errors are `{"Code", "Message", "RequestId"}` with the exception name as `Code` and the status of
§C.1, so botocore's rest-json parser raises the modelled exception (`client.exceptions.X`).

Lifecycle webhooks have the EventBridge shape of §C.4::

    {"version": "0", "id": "<uuid>", "detail-type": "Chime Meeting State Change", "source": "aws.chime",
     "account": "<tenant>", "time": "2026-12-03T11:00:00Z", "region": "<media region>", "resources": [],
     "detail": {"version": "0", "eventType": "chime:TranscriptionStarted", "timestamp": <epoch ms>,
                "meetingId", "externalMeetingId", "mediaRegion", "transcriptionRegion",
                "transcriptionConfiguration": "<JSON string>", "message"?}}

They ride on the meeting's lifecycle record (a CallStateEvent of namespace `LIFECYCLE_NAMESPACE`,
state `LIFECYCLE_STATE`, published by the meeting book), so they are stored with the event that caused
them and delivered through the same outbox as every other webhook.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from callscribe.api.errors import new_request_id
from callscribe.calls.events import AnyEvent, CallStateEvent
from callscribe.delivery.webhook import WebhookMessage, encode
from callscribe.urls import WEBRTC_OFFER_PATH

SURFACE = "chime"
NAMESPACE = "chime"  # registry namespace of a meeting's audio call (guid = MeetingId)
LIFECYCLE_NAMESPACE = "chime-meeting"  # the meeting's transcription lifecycle record (see chime_book)
LIFECYCLE_STATE = "chime-transcription"
ROLE = "attendee"
REST_PREFIX = "/meetings"
WS_PREFIX = "/chime/v1"
PCM_PATH = WS_PREFIX + "/attendee-audio"  # WS: one attendee's PCM16, ?token=<JoinToken>
EVENTS_PATH = WS_PREFIX + "/meetings/{MeetingId}/events"  # WS: TranscriptEvent JSON of one meeting
PATH_PREFIXES = (REST_PREFIX, WS_PREFIX)
ACCOUNT = "000000000000"  # the account part of a MeetingArn: callscribe has no AWS account

ERROR_CODES = {400: "BadRequestException", 401: "UnauthorizedException", 403: "ForbiddenException",
               404: "NotFoundException", 405: "BadRequestException", 409: "ConflictException",
               413: "BadRequestException", 415: "BadRequestException", 422: "UnprocessableEntityException",
               429: "ThrottlingException", 500: "ServiceFailureException", 503: "ServiceUnavailableException"}

# EngineTranscribe status types, as the JS SDK names them, and their EventBridge event types.
STATUS_EVENT_TYPES = {"started": "chime:TranscriptionStarted", "stopped": "chime:TranscriptionStopped",
                      "interrupted": "chime:TranscriptionInterrupted", "resumed": "chime:TranscriptionResumed",
                      "failed": "chime:TranscriptionFailed"}


def error_shape(status: int, code: str | None, message: str) -> dict[str, Any]:
    return {"Code": code or ERROR_CODES.get(status, "BadRequestException" if status < 500 else
                                           "ServiceFailureException"),
            "Message": message, "RequestId": new_request_id()}


def meeting_arn(region: str, meeting_id: str) -> str:
    return f"arn:aws:chime:{region}:{ACCOUNT}:meeting/{meeting_id}"


def meeting_object(m: Any, public_http: str, public_ws: str) -> dict[str, Any]:
    """The `Meeting` of CreateMeeting/GetMeeting. MediaPlacement names callscribe's own endpoints:
    AudioHostUrl the attendee PCM socket, AudioFallbackUrl the WebRTC offer endpoint (browsers: the
    join page), SignalingUrl the meeting's transcript event socket."""
    out: dict[str, Any] = {
        "MeetingId": m.meeting_id, "ExternalMeetingId": m.external_meeting_id, "MediaRegion": m.media_region,
        "MediaPlacement": {
            "AudioHostUrl": public_ws + PCM_PATH,
            "AudioFallbackUrl": public_http + WEBRTC_OFFER_PATH,
            "SignalingUrl": public_ws + EVENTS_PATH.format(MeetingId=m.meeting_id),
            "EventIngestionUrl": public_http + REST_PREFIX,
        },
        "MeetingArn": meeting_arn(m.media_region, m.meeting_id),
    }
    if m.meeting_host_id:
        out["MeetingHostId"] = m.meeting_host_id
    if m.features:
        out["MeetingFeatures"] = m.features
    if m.primary_meeting_id:
        out["PrimaryMeetingId"] = m.primary_meeting_id
    if m.tenant_ids:
        out["TenantIds"] = list(m.tenant_ids)
    return out


def attendee_object(a: Any) -> dict[str, Any]:
    return {"ExternalUserId": a.external_user_id, "AttendeeId": a.attendee_id, "JoinToken": a.join_token,
            "Capabilities": dict(a.capabilities)}


def lifecycle_data(kind: str, meeting: Any, configuration: str, message: str | None = None,
                   region: str | None = None) -> dict[str, Any]:
    """The data of one lifecycle record: what both the webhook and the meeting socket are made from."""
    data = {"type": kind, "eventTimeMs": int(datetime.now(timezone.utc).timestamp() * 1000),
            "meetingId": meeting.meeting_id, "externalMeetingId": meeting.external_meeting_id,
            "mediaRegion": meeting.media_region, "transcriptionRegion": region or meeting.media_region,
            "transcriptionConfiguration": configuration}
    if message:
        data["message"] = message
    return data


def eventbridge(data: dict[str, Any], tenant: str) -> dict[str, Any]:
    detail = {"version": "0", "eventType": STATUS_EVENT_TYPES[data["type"]], "timestamp": data["eventTimeMs"],
              "meetingId": data["meetingId"], "externalMeetingId": data["externalMeetingId"],
              "mediaRegion": data["mediaRegion"], "transcriptionRegion": data["transcriptionRegion"],
              "transcriptionConfiguration": data["transcriptionConfiguration"]}
    if data.get("message"):
        detail["message"] = data["message"]
    when = datetime.fromtimestamp(data["eventTimeMs"] / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"version": "0", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{data['meetingId']}/{data['eventTimeMs']}/"
                                                  f"{data['type']}")),
            "detail-type": "Chime Meeting State Change", "source": "aws.chime", "account": tenant,
            "time": when, "region": data["mediaRegion"], "resources": [], "detail": detail}


def webhook(event: AnyEvent) -> WebhookMessage | None:
    """One EventBridge-shaped webhook per lifecycle record; transcripts go to the meeting socket only
    (Chime delivers them to attendees, not to EventBridge)."""
    if not isinstance(event, CallStateEvent) or event.state != LIFECYCLE_STATE \
            or event.call.namespace != LIFECYCLE_NAMESPACE:
        return None
    body = eventbridge(event.data, event.call.tenant)
    return WebhookMessage(f"msg_{event.call.call_id}_{event.seq}", f"{event.call.call_id}:lifecycle", encode(body))
