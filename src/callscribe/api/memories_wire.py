"""The memories.ai audio-stream surface's wire shapes: its envelope and error body, its stream
statuses, and its webhook callbacks.

Envelope (HTTP status = `code`): `{"code": 200, "message": "success", "data": {...}}`; errors
`{"code": <status>, "message": "<why>", "data": null}`.

Callbacks (seed 002's final-callback envelope, used for every callback of a task): one per 5 s
segment of the source's timeline, `segment_index` from 0 with no gaps, sent once the segment is
complete (the cutting, the rules and why it survives a restart: api/memories_segments.py)::

    {"code": 200, "message": "SUCCESS", "task_id": "<task id>",
     "data": {"segment_index": 3, "segment_start_time": "15.0", "segment_end_time": "20.0",
              "status": 0, "message": "success",
              "transcript": {"type": "final", "text": "...",                    # "" in silence
                             "words": [{"text", "start", "end", "confidence", "speaker"}],  # seconds
                             "utterances": [{"speaker", "text", "start_time", "end_time"}]}}}

`words` are empty when `redact_pii` is on (redacted finals carry no word timings). Partials are
not sent: tasks transcribe finals only.

The last callback of a task, and nothing after it, is the end of its media: `transcript` null,
`segment_*` those of the last segment sent, and `status`/`message`: 14 "Stream stopped by
user" (the seed), or one of ours below for ends the seed does not document.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any, Callable, Sequence

from callscribe.api.memories_segments import SEGMENT_MS as SEGMENT_MS  # re-exported for the task API
from callscribe.api.memories_segments import STATUS_OK as STATUS_OK
from callscribe.api.memories_segments import (Final, Segments, end_msg_id, recover_interrupted, segment_msg_id,
                                              task_key)
from callscribe.calls.events import AnyEvent, CallStateEvent, SettledEvent, UtteranceEvent
from callscribe.calls.media import SourceEnd
from callscribe.delivery.webhook import Formatter, WebhookMessage, encode
from callscribe.store.db import Database

PROVIDERS = ("assemblyai", "elevenlabs")  # the providers whose option names the surface takes
SURFACE = "memories"
NAMESPACE = "audio-stream"  # the registry namespace of every task (the guid is the task id)
PATH_PREFIXES = ("/serve/api/v2/audio-stream", "/serve/ws/v2/audio-stream")
_ENDED_KEPT = 10_000  # ended tasks remembered by the formatter (the registry sends nothing after an end anyway)
#: Stream statuses of a task's last callback: 14 is the seed's; the others are ours.
END_STATUSES: dict[str, tuple[int, str]] = {
    "stopped": (14, "Stream stopped by user"),
    "ended": (15, "Stream ended"),
    "unreachable": (16, "Stream source could not be reached"),
    "undecodable": (17, "Stream source could not be decoded"),
    "shutdown": (18, "Server shutting down"),
    "error": (19, "Internal error"),
    "interrupted": (20, "Stream interrupted: the server stopped without ending it"),
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


def formatter(media_ms_of: Callable[[str, str], float | None],
              on_segment: Callable[[str, str, int], None] | None = None) -> Formatter:
    """The surface's webhook formatter: the callbacks of the segments each final completes, and on
    media-ended the rest of the segments and the end callback. `media_ms_of(tenant, task_id)` says
    how much audio the task received (None: no such task, as for a start that was refused after its
    media connected); `on_segment(tenant, task_id, index)` hears of each segment sent."""
    tasks: dict[str, Segments] = {}  # call id -> its segments (a cache of what is stored: see memories_segments)
    ended: OrderedDict[str, None] = OrderedDict()  # tasks whose end callback is out: nothing may follow it

    def messages(event: AnyEvent, payloads: list[dict[str, Any]]) -> list[WebhookMessage]:
        out = []
        for payload in payloads:
            index = payload["data"]["segment_index"]
            out.append(WebhookMessage(segment_msg_id(event.call.call_id, index), task_key(event.call.call_id),
                                      encode(payload)))
            if on_segment is not None:
                on_segment(event.call.tenant, event.call.guid, index)
        return out

    def webhook(event: AnyEvent) -> list[WebhookMessage] | None:
        if event.call.namespace != NAMESPACE:
            return None
        call_id = event.call.call_id
        if call_id in ended:
            return None
        if isinstance(event, SettledEvent):
            found = tasks.get(call_id)
            return messages(event, found.settle(event.participant, event.until_ms)) if found else None
        if isinstance(event, UtteranceEvent):
            if event.kind != "final":
                return None
            segments = tasks.setdefault(call_id, Segments(event.call.guid))
            final = Final(event.participant, event.start_ms, event.end_ms, event.text, event.words)
            return messages(event, segments.add_final(event.participant, final))
        if isinstance(event, CallStateEvent) and event.state == "streaming-started":
            tasks.setdefault(call_id, Segments(event.call.guid)).add_legs(str(p) for p in event.data.get("legs", {}))
        elif isinstance(event, CallStateEvent) and event.state == "media-ended":
            segments = tasks.pop(call_id, Segments(event.call.guid))
            ended[call_id] = None
            while len(ended) > _ENDED_KEPT:
                ended.popitem(last=False)
            media_ms = media_ms_of(event.call.tenant, event.call.guid)
            if media_ms is None:
                return None
            out = messages(event, segments.close(media_ms))
            status, message = end_status(SourceEnd.parse(str(event.data.get("reason", ""))))
            out.append(WebhookMessage(end_msg_id(call_id), task_key(call_id),
                                      encode(segments.end_callback(status, message))))
            return out
        return None

    return webhook


def recover(db: Database, call_ids: Sequence[str], when: datetime) -> int:
    """At start: the unsent segments and the end callback of tasks a dead process left open."""
    status, message = END_STATUSES["interrupted"]
    return recover_interrupted(db, call_ids, when, NAMESPACE, status, message)
