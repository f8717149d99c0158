"""The listen surface's wire shapes (Deepgram's `/v1/listen`): its error body and its webhook.

Errors are Deepgram's `{"err_code", "err_msg", "request_id"}`, on HTTP answers and on refused
WebSocket upgrades (which also carry the `dg-request-id` and `dg-error` headers, as Deepgram's do).

Webhook: Deepgram posts live Results to a per-request `callback` URL. callscribe delivers to the one
configured webhook (signed, retried, dead-lettered like every other surface), so `callback` is
accepted only when it names that webhook's host, and the webhook body of each final is the Results
message a Deepgram client knows, plus callscribe's ids::

    {"type": "Results", "channel_index": [0], "start": 1.2, "duration": 2.3, "is_final": true,
     "speech_final": true, "from_finalize": false,
     "channel": {"alternatives": [{"transcript", "confidence", "words": [...]}]},
     "metadata": {"request_id": "<guid>", "model_info": {...}, "model_uuid": "..."},
     "callId": "...", "namespace": "deepgram", "participant": "ch0", "sequence": 7, "utteranceNumber": 2}

`channel_index` holds only the channel here (the live message's second element, the channel count,
belongs to the connection, not to the utterance).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from starlette.responses import JSONResponse

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.errors import new_request_id
from callscribe.api.limits import limits_of
from callscribe.calls.events import AnyEvent, UtteranceEvent
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MAX_GUID, MediaRefused, Participant, TrackSpec, valid_id
from callscribe.calls.registry import NoCapacity, NotReady, ShuttingDown, UnsupportedLanguage
from callscribe.config import ApiKey
from callscribe.delivery.webhook import WebhookMessage, encode, message_id, ordering_key
from callscribe.api.listen_messages import ModelInfo, results
from callscribe.api.listen_params import ListenOptions, ListenRefused, parse_query

SURFACE = "listen"
NAMESPACE = "deepgram"
PATH = "/v1/listen"
PATH_PREFIXES = (PATH,)
ERR_CODES = {400: "Bad Request", 401: "INVALID_AUTH", 403: "INSUFFICIENT_PERMISSIONS", 404: "Not Found",
             405: "Method Not Allowed", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
             429: "TOO_MANY_REQUESTS", 500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE"}


def error_shape(status: int, code: str | None, message: str, request_id: str | None = None) -> dict[str, Any]:
    return {"err_code": code or ERR_CODES.get(status, "ERROR"), "err_msg": message,
            "request_id": request_id or new_request_id()}


def error_response(status: int, message: str, request_id: str | None = None) -> JSONResponse:
    """An error answer with Deepgram's headers (for refused upgrades and the batch route)."""
    body = error_shape(status, None, message, request_id)
    return JSONResponse(body, status_code=status,
                        headers={"dg-request-id": body["request_id"], "dg-error": json.dumps(body)[:1024]})


def credentials(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(id, secret) from `Authorization: Token id:secret` (Deepgram's scheme), or any form the other
    surfaces accept (`Bearer id:secret`, Basic, ASAPP's headers)."""
    scheme, _, rest = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "token" and rest:
        api_id, sep, secret = rest.strip().partition(":")
        return (api_id, secret) if sep else (None, None)
    return credentials_from_headers(headers)


class Denied(Exception):
    """A listen request refused before any audio: HTTP `status` with Deepgram's error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def admit(app: Any, credentials: tuple[str | None, str | None], query: Sequence[tuple[str, str]]
          ) -> tuple[ApiKey, ListenOptions]:
    """The caller's key and options, or Denied (401 bad key, 429 over its rate, 400 bad query)."""
    services = app.state.services
    key = authenticate(services.api_keys, *credentials)
    if key is None:
        raise Denied(401, "Invalid credentials.")
    if limits_of(app).rate.take(key.id) > 0:
        raise Denied(429, "Too many requests.")
    hosts = [h for h in [host_of(services.settings.webhook_url)] if h]
    try:
        return key, parse_query(query, callback_hosts=hosts)
    except ListenRefused as exc:
        raise Denied(400, str(exc)) from None


def call_guid(registry: Any, tenant: str, opts: ListenOptions, request_id: str) -> str:
    """The request's call: named by its first `tag` (when the store can keep it as a call id) unless a
    call of that name is still in the registry (tags are labels a client may put on every request: one must not join or block
    another), else by the request id."""
    tag = opts.tags[0] if opts.tags else None
    if valid_id(tag, MAX_GUID) and registry.find(tenant, tag, NAMESPACE) is None:
        return tag
    return request_id


def refusal(exc: Exception) -> Denied:
    """What the registry's refusal of a listen call means to a Deepgram client."""
    if isinstance(exc, UnsupportedLanguage):
        return Denied(400, "No such model/language/tier combination found.")
    if isinstance(exc, NotReady):
        return Denied(503, "The speech model is still loading.")
    if isinstance(exc, ShuttingDown):
        return Denied(503, "The service is shutting down.")
    if isinstance(exc, NoCapacity):
        return Denied(429, "Too many concurrent requests: no transcription capacity.")
    if isinstance(exc, MediaRefused):
        return Denied(400, exc.reason)
    return Denied(400, f"The request cannot be served: {type(exc).__name__}")


def host_of(url: str | None) -> str | None:
    """The host a `callback` must name: the configured webhook's."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname if url else None


def channel_of(participant: str) -> int:
    """Listen calls name their participants ch0, ch1, ... after the audio channel they are on."""
    return int(participant[2:]) if participant.startswith("ch") and participant[2:].isdigit() else 0


def participant_id(channel: int) -> str:
    return f"ch{channel}"


def track_specs(opts: ListenOptions) -> list[TrackSpec]:
    """Track "0", "1", ... per audio channel, each carrying its own participant."""
    return [TrackSpec(str(c), Participant(participant_id(c), "speaker", name=f"channel {c}"))
            for c in range(opts.tracks)]


def stream_params(opts: ListenOptions, request_id: str, *, live: bool = True) -> StreamParams:
    """The interval a listen request opens: words always (Results carry them), redaction as `redact=`
    asks (none without it, as on Deepgram), partials only when the client will see them."""
    return StreamParams(
        language=opts.language, detailed_token=True, redaction_output="redacted" if opts.redact else "unredacted",
        smart_formatting=opts.smart_format, partials=live and (opts.interim_results or opts.vad_events),
        surface=SURFACE, redaction_policy=opts.redaction_policy(), endpoint_silence_ms=opts.endpointing_ms,
        options={"request_id": request_id, "model": opts.model, "encoding": opts.encoding,
                 "sample_rate": opts.sample_rate, "channels": opts.channels, "multichannel": opts.multichannel,
                 "interim_results": opts.interim_results, "redact": list(opts.redact), "tags": list(opts.tags),
                 "keyterms": list(opts.keyterms), "live": live})


def webhook(event: AnyEvent) -> WebhookMessage | None:
    """One webhook per final utterance, none for partials or state changes."""
    if not isinstance(event, UtteranceEvent) or event.kind != "final":
        return None
    opts = ListenOptions(punctuate=True)
    body = results(event, channel_of(event.participant), opts, event.call.guid, ModelInfo("callscribe", "callscribe"),
                   is_final=True, speech_final=True)
    body["channel_index"] = [channel_of(event.participant)]
    body.update({"callId": event.call.call_id, "namespace": event.call.namespace, "participant": event.participant,
                 "sequence": event.seq, "utteranceNumber": event.utterance})
    return WebhookMessage(message_id(event), ordering_key(event), encode(body))
