"""memories.ai-style audio-stream tasks: `POST /serve/api/v2/audio-stream/start` and `/stop` (seed
002 and control-apis.md §B), plus `GET /serve/api/v2/audio-stream/{task_id}` (ours: the original
has no way to see a task).

A task pulls `audio_url` (ingest/url.py) into a call of namespace "audio-stream" whose guid is the
task id, transcribes it with the options we can honour, and sends its callbacks
(api/memories_wire.py) through the webhook outbox to CALLSCRIBE_WEBHOOK_URL (the original sends
them to the account's webhook; no request field names one). Auth: `Authorization: id:secret` (no
"Bearer"), the key pair of every surface. Answers and errors are in the surface's envelope, HTTP
status = `code`: 400 invalid body or unknown task, 401 bad key, 429 more than
CALLSCRIBE_MEMORIES_TASKS_PER_KEY running tasks for the key (or the rate limit), 503 no capacity.
Tasks live in memory: a restart ends them (their end callback says "Server shutting down"; after
a crash the next start sends their unsent segments and an end saying "Stream interrupted").
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from callscribe.api import memories_wire as wire
from callscribe.api.errors import ApiError
from callscribe.api.limits import authorize, read_json
from callscribe.calls.events import CallEvent, CallStateEvent, EventBus
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import SourceEnd, SteeredSource
from callscribe.calls.registry import NoCapacity, NotReady, SourceFailed, UnsupportedLanguage
from callscribe.config import ApiKey
from callscribe.logsafe import url_for_log
from callscribe.services import Services

router = APIRouter(tags=["memories.ai audio stream"])

MAX_URL = 4096
MAX_INACTIVITY_S = 3600.0
DEFAULT_INACTIVITY_S = 30.0
_KEPT_ENDED = 1000  # ended tasks kept for status queries (the oldest are forgotten first)

# Provider options of the current and older start pages, by JSON type. Those in HONOURED change
# what we do; the others are accepted, ignored and listed in the task.
_BOOL = ("punctuate", "format_text", "language_detection", "multichannel", "disfluencies", "speaker_labels",
         "sentiment_analysis", "entity_detection", "auto_highlights", "content_safety", "iab_categories",
         "auto_chapters", "summarization", "redact_pii", "redact_pii_audio", "filter_profanity",
         "tag_audio_events", "diarize", "enable_logging")
_NUMBER = ("language_confidence_threshold", "audio_start_from", "audio_end_at", "speech_threshold",
           "speakers_expected", "num_speakers", "inactivity_timeout")
_STRING = ("language_code", "model_id", "summary_model", "summary_type", "redact_pii_sub",
           "redact_pii_audio_quality")
_LIST = ("speech_models", "custom_topics", "topics", "redact_pii_policies", "custom_spelling")
_OBJECT = ("speech_understanding",)
HONOURED = ("audio_url", "provider", "language_code", "format_text", "redact_pii", "redact_pii_policies",
            "speaker_labels", "multichannel", "inactivity_timeout")


@dataclass(frozen=True)
class StartRequest:
    audio_url: str
    provider: str
    language: str
    format_text: bool
    redact: bool
    per_channel: bool
    inactivity_timeout_s: float
    options: dict[str, Any]  # every option given, as given
    ignored: tuple[str, ...]  # the given options we do not act on


def _bad(message: str) -> ApiError:
    return ApiError(400, None, message)


def _check_type(name: str, value: Any) -> None:
    if name in _BOOL and not isinstance(value, bool):
        raise _bad(f"{name} must be a boolean")
    if name in _NUMBER and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
                            or value < 0):
        raise _bad(f"{name} must be a non-negative number")
    if name in _STRING and not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    if name in _LIST and not isinstance(value, list):
        raise _bad(f"{name} must be a list")
    if name in _LIST and name != "custom_spelling" and not all(isinstance(v, str) for v in value):
        raise _bad(f"{name} must be a list of strings")
    if name in _OBJECT and not isinstance(value, dict):
        raise _bad(f"{name} must be an object")


def parse_start(body: Any, schemes: tuple[str, ...]) -> StartRequest:
    """The start request of a body, or ApiError(400) saying what is wrong with it."""
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    url = body.get("audio_url")
    if not isinstance(url, str) or not url.strip():
        raise _bad("audio_url is required")
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme.lower() not in schemes or not parts.hostname:
        raise _bad(f"audio_url must be a URL of scheme {', '.join(schemes)} of at most {MAX_URL} characters")
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise _bad("audio_url must not contain spaces or control characters")
    provider = body.get("provider", "assemblyai")
    if provider not in wire.PROVIDERS:
        raise _bad(f"provider must be one of {', '.join(wire.PROVIDERS)}")
    options = {k: v for k, v in body.items() if k not in ("audio_url", "provider")}
    for name, value in options.items():
        if value is not None:
            _check_type(name, value)
    language = options.get("language_code") or "en"
    if not isinstance(language, str) or len(language) > 32:
        raise _bad("language_code must be a language tag such as en")
    inactivity = options.get("inactivity_timeout")
    inactivity_s = DEFAULT_INACTIVITY_S if inactivity in (None, 0) else float(inactivity)
    if not 1 <= inactivity_s <= MAX_INACTIVITY_S:
        raise _bad(f"inactivity_timeout must be between 1 and {MAX_INACTIVITY_S:g} seconds")
    ignored = tuple(sorted(k for k, v in options.items() if k not in HONOURED and v not in (None, False)))
    return StartRequest(
        audio_url=url, provider=str(provider), language=language,
        format_text=options.get("format_text") is not False,
        redact=bool(options.get("redact_pii")) or bool(options.get("redact_pii_policies")),
        per_channel=bool(options.get("speaker_labels")) or bool(options.get("multichannel")),
        inactivity_timeout_s=inactivity_s, options=options, ignored=ignored)


def stream_params(req: StartRequest) -> StreamParams:
    # Redacted finals carry no word timings (calls/redaction.py), so words only without redaction.
    return StreamParams(
        language=req.language, detailed_token=not req.redact, smart_formatting=req.format_text,
        redaction_output="redacted" if req.redact else "unredacted", partials=False, surface=wire.SURFACE,
        options={"provider": req.provider, "audio_url": url_for_log(req.audio_url),
                 "ignored_options": list(req.ignored)})


@dataclass
class Task:
    task_id: str
    tenant: str
    key_id: str
    request: StartRequest
    source: SteeredSource
    created_at: float = field(default_factory=time.time)
    state: str = "starting"  # starting | running | ended
    segments: int = 0  # segment callbacks stored so far
    last_segment_index: int | None = None
    end: SourceEnd | None = None
    ended_at: float | None = None

    def view(self) -> dict[str, Any]:
        status, message = wire.end_status(self.end) if self.state == "ended" else (wire.STATUS_OK, "running")
        return {"task_id": self.task_id, "state": self.state, "audio_url": url_for_log(self.request.audio_url),
                "provider": self.request.provider, "language_code": self.request.language,
                "speaker_labels": self.request.per_channel, "redact_pii": self.request.redact,
                "ignored_options": list(self.request.ignored), "created_at": self.created_at,
                "ended_at": self.ended_at, "media_seconds": round(self.source.fed_ms / 1000, 3),
                "segments": self.segments, "last_segment_index": self.last_segment_index,
                "status": status, "message": message}


class TaskBook:
    """Every task of the app, what the bus says about them (how they ended) and what the formatter
    says (segments sent so far)."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    def watch(self, bus: EventBus) -> None:
        bus.subscribe(self._on_event)

    def get(self, tenant: str, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        return task if task is not None and task.tenant == tenant else None

    def running(self, key_id: str) -> int:
        return sum(1 for t in self._tasks.values() if t.key_id == key_id and t.state != "ended")

    def add(self, task: Task) -> None:
        self._tasks[task.task_id] = task
        ended = [t for t in self._tasks.values() if t.state == "ended"]
        for old in sorted(ended, key=lambda t: t.ended_at or 0)[:max(0, len(ended) - _KEPT_ENDED)]:
            del self._tasks[old.task_id]

    def forget(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def media_ms(self, tenant: str, task_id: str) -> float | None:
        task = self.get(tenant, task_id)
        return None if task is None else task.source.fed_ms

    def segment_sent(self, tenant: str, task_id: str, index: int) -> None:
        """The formatter stored segment `index`'s callback."""
        task = self.get(tenant, task_id)
        if task is not None:
            task.segments += 1
            task.last_segment_index = index

    def _on_event(self, event: CallEvent) -> None:
        if event.call.namespace != wire.NAMESPACE:
            return
        task = self.get(event.call.tenant, event.call.guid)
        if task is None:
            return
        if isinstance(event, CallStateEvent) and event.state == "media-ended":
            task.state = "ended"
            task.ended_at = time.time()
            task.end = SourceEnd.parse(str(event.data.get("reason", ""))) or task.source.end


def tasks_of(request: Request) -> TaskBook:
    book: TaskBook = request.app.state.memories_tasks
    return book


def _ok(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(wire.envelope(data))


async def launch(services: Services, book: TaskBook, key: ApiKey, req: StartRequest,
                 task_id: str | None = None) -> Task:
    """Start a task for this key (a fresh task id unless given); ApiError when it cannot start."""
    if not services.settings.webhook_url:  # the original's words: callbacks are the only way out
        raise _bad("An async request requires at least one webhook.")
    registry = services.registry
    if registry is None:
        raise ApiError(503, None, "Service Unavailable")
    try:
        registry.check_language(req.language)
    except UnsupportedLanguage:
        raise _bad(f"language_code not supported: {req.language}") from None
    except NotReady:
        raise ApiError(503, None, "The speech model is not loaded yet") from None
    limit = services.settings.memories_tasks_per_key
    if book.running(key.id) >= limit:
        raise ApiError(429, None, f"At most {limit} running audio-stream tasks per API key")
    task_id = task_id or str(uuid.uuid4())
    if services.url_sources is None:
        raise ApiError(503, None, "This server pulls no stream URLs")
    source = services.url_sources(req.audio_url, per_channel=req.per_channel,
                                  inactivity_timeout_s=req.inactivity_timeout_s)
    task = Task(task_id, key.tenant, key.id, req, source)
    book.add(task)  # counted against the limit from now, so concurrent starts cannot pass it
    try:
        await registry.start_streaming(key.tenant, wire.NAMESPACE, task_id, stream_params(req), source=source)
    except BaseException as exc:
        book.forget(task_id)  # refused: no task, so no callback for the media it connected
        await source.finish(SourceEnd("error", "start refused"))
        if isinstance(exc, (NoCapacity, NotReady)):
            raise ApiError(503, None, "No transcription capacity available") from None
        if isinstance(exc, (SourceFailed, UnsupportedLanguage)):
            raise ApiError(500, None, f"The task could not start: {exc}") from None
        raise
    if task.state == "starting":
        task.state = "running"
    source.release()
    return task


@router.post("/serve/api/v2/audio-stream/start")
async def start(request: Request) -> JSONResponse:
    """Start pulling and transcribing `audio_url`; answers with the task id at once."""
    key = authorize(request)
    services = request.app.state.services
    req = parse_start(await read_json(request, services.settings.max_body_bytes), services.url_sources.schemes if services.url_sources else ())
    task = await launch(services, tasks_of(request), key, req)
    return _ok({"task_id": task.task_id, "message": "Audio stream transcription started"})


@router.post("/serve/api/v2/audio-stream/stop")
async def stop(request: Request) -> JSONResponse:
    """Stop a task at once; safe to repeat (a task that already ended answers the same)."""
    key = authorize(request)
    body = await read_json(request, request.app.state.services.settings.max_body_bytes)
    task_id = body.get("task_id") if isinstance(body, dict) else None
    if not isinstance(task_id, str) or not task_id:
        raise _bad("task_id is required")
    task = tasks_of(request).get(key.tenant, task_id)
    if task is None:
        raise _bad("Invalid task_id or task not found")
    if task.state != "ended":
        await task.source.finish(SourceEnd("stopped", wire.END_STATUSES["stopped"][1]))
    return _ok({"task_id": task_id, "message": "Audio stream stopped successfully"})


@router.get("/serve/api/v2/audio-stream/{task_id}")
async def status(task_id: str, request: Request) -> JSONResponse:
    """A task's state, source, segments so far and, once ended, why."""
    key = authorize(request)
    task = tasks_of(request).get(key.tenant, task_id)
    if task is None:
        raise _bad("Invalid task_id or task not found")
    return _ok(task.view())
