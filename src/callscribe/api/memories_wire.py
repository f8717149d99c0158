"""The memories.ai audio-stream surface's wire shapes: its envelope and error body, its stream
statuses, and its webhook callbacks.

Envelope (HTTP status = `code`): `{"code": 200, "message": "success", "data": {...}}`; errors
`{"code": <status>, "message": "<why>", "data": null}`.

Callbacks (seed 002's final-callback envelope, used for every callback of a task)::

    {"code": 200, "message": "SUCCESS", "task_id": "<task id>",
     "data": {"segment_index": 3, "segment_start_time": "15.0", "segment_end_time": "20.0",
              "status": 0, "message": "success",
              "transcript": {"type": "final", "speaker": "speaker", "text": "...",
                             "start_time": "15.42", "end_time": "17.9",
                             "words": [{"text", "start", "end", "confidence"}]}}}   # seconds

One callback per final utterance, placed on the 5 s segment grid: `segment_index` is the segment
its first word falls in (start // 5 s), `segment_*_time` that segment's bounds, and the utterance's
own times are in `transcript`. Why not one callback per 5 s holding the segment's finals: each
callback here is written to the outbox in the same transaction as the final it carries (the
persister calls the formatter), so a restart can lose nothing between a final being stored and
its callback; a grouping buffer would hold words only in memory until its segment closed, and
would have to guess when a segment is complete (a final can arrive seconds after its audio). The
engine's utterances rarely exceed 5 s, so callbacks still come about once per spoken segment.
`words` are sent unless `redact_pii` is on (redacted finals carry no word timings).

The last callback of a task, and nothing after it, is the end of its media: `transcript` null,
`segment_*` the last segment of audio received, and `status`/`message`: 14 "Stream stopped by
user" (the seed), or one of ours below for ends the seed does not document.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from callscribe.calls.events import CallEvent, CallStateEvent, UtteranceEvent
from callscribe.calls.media import SourceEnd
from callscribe.delivery.webhook import WebhookMessage, encode

PROVIDERS = ("assemblyai", "elevenlabs")  # the providers whose option names the surface takes
SURFACE = "memories"
NAMESPACE = "audio-stream"  # the registry namespace of every task (the guid is the task id)
PATH_PREFIXES = ("/serve/api/v2/audio-stream", "/serve/ws/v2/audio-stream")
SEGMENT_MS = 5000

STATUS_OK = 0  # a transcript segment
#: Stream statuses of a task's last callback: 14 is the seed's; the others are ours.
END_STATUSES: dict[str, tuple[int, str]] = {
    "stopped": (14, "Stream stopped by user"),
    "ended": (15, "Stream ended"),
    "unreachable": (16, "Stream source could not be reached"),
    "undecodable": (17, "Stream source could not be decoded"),
    "shutdown": (18, "Server shutting down"),
    "error": (19, "Internal error"),
}


def envelope(data: dict[str, Any] | None, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def error_shape(status: int, code: str | None, message: str) -> dict[str, Any]:
    return envelope(None, status, message)


def end_status(end: SourceEnd | None) -> tuple[int, str]:
    """(status, message) of a task's end; the source's own message when it has one."""
    if end is None:
        return END_STATUSES["ended"]
    status, default = END_STATUSES.get(end.status, END_STATUSES["error"])
    return status, end.message or default


def seconds(ms: float) -> str:
    """Seconds as the seed writes segment times: a string ("15.0", "17.42")."""
    text = f"{ms / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def segment_of(start_ms: int) -> int:
    return max(0, start_ms) // SEGMENT_MS


def callback(task_id: str, index: int, start_ms: float, end_ms: float, status: int, message: str,
             transcript: dict[str, Any] | None) -> dict[str, Any]:
    return {"code": 200, "message": "SUCCESS", "task_id": task_id, "data": {
        "segment_index": index, "segment_start_time": seconds(start_ms), "segment_end_time": seconds(end_ms),
        "status": status, "message": message, "transcript": transcript}}


def transcript_callback(event: UtteranceEvent) -> dict[str, Any]:
    index = segment_of(event.start_ms)
    transcript: dict[str, Any] = {"type": event.kind, "speaker": event.participant, "text": event.text,
                                  "start_time": seconds(event.start_ms), "end_time": seconds(event.end_ms)}
    if event.words is not None:
        transcript["words"] = [{"text": w.text, "start": w.start_ms / 1000, "end": w.end_ms / 1000,
                                "confidence": w.confidence} for w in event.words]
    return callback(event.call.guid, index, index * SEGMENT_MS, (index + 1) * SEGMENT_MS, STATUS_OK, "success",
                    transcript)


def last_segment(media_ms: float) -> tuple[int, float, float]:
    """(index, start ms, end ms) of the last segment of `media_ms` of audio (segment 0 if none)."""
    index = max(0, math.ceil(media_ms / SEGMENT_MS) - 1)
    return index, index * SEGMENT_MS, max(index * SEGMENT_MS, min((index + 1) * SEGMENT_MS, media_ms))


def end_callback(task_id: str, end: SourceEnd | None, media_ms: float) -> dict[str, Any]:
    status, message = end_status(end)
    index, start, stop = last_segment(media_ms)
    return callback(task_id, index, start, stop, status, message, None)


def formatter(media_ms_of: Callable[[str, str], float | None]) -> Callable[[CallEvent], WebhookMessage | None]:
    """The surface's webhook formatter: a callback per final of a task, and the end callback on
    media-ended. `media_ms_of(tenant, task_id)` says how much audio the task received (None: no
    such task, as for a start that was refused after its media connected)."""

    def webhook(event: CallEvent) -> WebhookMessage | None:
        if event.call.namespace != NAMESPACE:
            return None
        key = f"{event.call.call_id}:task"  # one ordering key per task: the end comes after every final
        msg_id = f"msg_{event.call.call_id}_{event.seq}"
        if isinstance(event, UtteranceEvent):
            if event.kind != "final" or not event.text.strip():
                return None
            return WebhookMessage(msg_id, key, encode(transcript_callback(event)))
        if isinstance(event, CallStateEvent) and event.state == "media-ended":
            media_ms = media_ms_of(event.call.tenant, event.call.guid)
            if media_ms is None:
                return None
            end = SourceEnd.parse(str(event.data.get("reason", "")))
            payload = end_callback(event.call.guid, end, media_ms)
            return WebhookMessage(msg_id, key, encode(payload))
        return None

    return webhook
