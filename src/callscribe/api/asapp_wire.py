"""The ASAPP surface's wire shapes: its error body, the summary of an interval, which participant
each media namespace's tracks carry, and the webhook of a final utterance.

Webhook body (ASAPP's shape, plus fields of our own that ASAPP clients ignore)::

    {"type": "transcript",
     "externalConversationId": "<guid>",
     "streamId": "<per-leg stream id>",
     "sender": {"externalId": "<customerId|agentId>", "role": "customer|agent"},
     "autotranscribeResponse": {
         "message": "transcript", "start": 400, "end": 3968,
         "utterance": [{"text": "my card is ################"}],
         "unredactedUtterance": [{"text": "my card is 4111111111111111"}],   # redacted_and_unredacted only
         "tokens": [{"content", "start", "end", "confidence"}]}              # detailedToken only
     "callId": "<callscribe call id>", "namespace": "<media namespace>",
     "participant": "<participant id>", "sequence": 17, "utteranceNumber": 3}

`utterance[0].text` obeys the stream's redactionOutput (redacted unless it is "unredacted"). The
unredacted copy, in "redacted_and_unredacted" mode only, sits beside it as `unredactedUtterance`
inside `autotranscribeResponse`, in the same one-element-list shape; the GET messages API carries
it as `unredactedText` on each item.
"""

from __future__ import annotations

from typing import Any

from callscribe.api.errors import callscribe_shape
from callscribe.calls.events import AnyEvent, UtteranceEvent
from callscribe.calls.media import Participant
from callscribe.delivery.webhook import WebhookMessage, encode, message_id, ordering_key

SURFACE = "asapp"
PATH_PREFIXES = ("/mg-autotranscribe/", "/autotranscribe/", "/conversation/")
ROLES = ("customer", "agent")
error_shape = callscribe_shape  # callscribe's own error shape is ASAPP's


def track_participants(namespace: str, *, track_map: dict[str, str], media_line_order: str,
                       external_ids: dict[str, str]) -> dict[str, Participant]:
    """track -> participant for a namespace whose roles start-streaming's parameters assign; other
    namespaces' adapters name their tracks' participants (an Amazon Connect stream's tracks say who
    speaks), and the start's customerId/agentId are filled in by role."""
    if namespace == "twilio":
        roles = {"inbound": track_map.get("inbound", "customer"), "outbound": track_map.get("outbound", "agent")}
    elif namespace == "siprec":  # m-lines in offer order
        roles = dict(zip(("0", "1"), ("agent", "customer") if media_line_order == "AGENT_FIRST" else ROLES))
    else:
        return {}
    return {track: Participant(role, role, external_id=external_ids.get(role, "")) for track, role in roles.items()}


def transcript_payload(event: UtteranceEvent) -> dict[str, Any]:
    response: dict[str, Any] = {"message": "transcript", "start": event.start_ms, "end": event.end_ms,
                                "utterance": [{"text": event.text}]}
    if event.redaction_output == "redacted_and_unredacted" and event.unredacted_text is not None:
        response["unredactedUtterance"] = [{"text": event.unredacted_text}]
    if event.words is not None:
        response["tokens"] = [{"content": w.text, "start": w.start_ms, "end": w.end_ms,
                               "confidence": w.confidence} for w in event.words]
    return {
        "type": "transcript",
        "externalConversationId": event.call.guid,
        "streamId": event.stream_id,
        "sender": {"externalId": event.external_id, "role": event.role},
        "autotranscribeResponse": response,
        "callId": event.call.call_id,
        "namespace": event.call.namespace,
        "participant": event.participant,
        "sequence": event.seq,
        "utteranceNumber": event.utterance,
    }


def webhook(event: AnyEvent) -> WebhookMessage | None:
    """The ASAPP surface sends one webhook per final utterance and none for state changes."""
    if not isinstance(event, UtteranceEvent) or event.kind != "final":
        return None
    return WebhookMessage(message_id(event), ordering_key(event), encode(transcript_payload(event)))
