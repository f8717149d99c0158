"""The meeting socket: `WS /chime/v1/meetings/{MeetingId}/events`, the meeting's live transcripts and
transcription status as the JS SDK's TranscriptEvent JSON (chime_events.py), in publish order.

Authorised by a JoinToken of one of the meeting's attendees (`?token=`), or by an API key of the
meeting's tenant (the headers every surface accepts: `Authorization: Bearer id:secret`, Basic, ...).
Like Chime's data messages, it is live only: a subscriber gets what happens after it connects.
Each socket counts under the process's connection limits (`services.connections`, 503 when over)
and queues only its meeting's events; one whose reader falls QUEUE_MAX events behind is closed
(1008, "events are not read fast enough") instead of silently losing events.
Refusals before the upgrade are HTTP answers in the Chime error shape (401/403, 404 for a meeting
this caller cannot see); DeleteMeeting closes the socket (1000, "meeting deleted"), and DeleteAttendee
closes the sockets opened with that attendee's JoinToken (1000, "attendee deleted").
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from callscribe.api.auth import authenticate, credentials_from_headers
from callscribe.api.chime_book import MeetingBook
from callscribe.api.chime_events import TranscriptShaper, status_frame
from callscribe.api.chime_settings import MeetingTranscription, parse_configuration
from callscribe.api.chime_wire import EVENTS_PATH, LIFECYCLE_NAMESPACE, LIFECYCLE_STATE, NAMESPACE, error_shape
from callscribe.calls.events import CallEvent, CallStateEvent, UtteranceEvent
from callscribe.ingest.base import Close, JsonSender, admit, close, deny, peer_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["Chime SDK meetings"])
QUEUE_MAX = 10_000


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_shape(status, None, message), status_code=status)


@router.websocket(EVENTS_PATH)
async def meeting_events(ws: WebSocket, MeetingId: str) -> None:
    services = ws.app.state.services
    book: MeetingBook = ws.app.state.chime_meetings
    tenant: str | None = None
    attendee_id: str | None = None  # the attendee whose JoinToken opened it: its deletion closes the socket
    token = ws.query_params.get("token")
    if token:
        found = book.attendee_of(token)
        if found is not None and found[0].meeting_id == MeetingId.lower():
            tenant, attendee_id = found[0].tenant, found[1].attendee_id
        if tenant is None:
            await deny(ws, 403, "", response=_refuse(403, "The join token is not valid for this meeting"))
            return
    else:
        key = authenticate(services.api_keys, *credentials_from_headers(ws.headers))
        if key is None:
            await deny(ws, 401, "", response=_refuse(401, "A join token or API key is required"))
            return
        tenant = key.tenant
    meeting = book.get(tenant, MeetingId)
    if meeting is None:
        await deny(ws, 404, "", response=_refuse(404, f"The meeting {MeetingId} is not found"))
        return
    mid = meeting.meeting_id
    lifecycle = f"{mid}:transcription"
    slot = await admit(ws, services.connections, lambda why: deny(ws, 503, "", response=_refuse(503, why)))
    if slot is None:
        return
    try:
        await ws.accept()
    except BaseException:
        slot.release()
        raise
    slot.started()  # authorised before the upgrade: nothing more to prove
    queue: asyncio.Queue[CallEvent] = asyncio.Queue(QUEUE_MAX)
    overflowed = asyncio.Event()

    def put(event: CallEvent) -> None:
        # Runs on every publish of the server: only this meeting's events are queued, and a socket
        # whose reader fell behind is closed (below) rather than dropping events for it one by one.
        call = event.call
        if overflowed.is_set() or call.tenant != tenant:
            return
        if isinstance(event, UtteranceEvent):
            if call.namespace != NAMESPACE or call.guid != mid:
                return
        elif not (isinstance(event, CallStateEvent) and event.state == LIFECYCLE_STATE
                  and call.namespace == LIFECYCLE_NAMESPACE and call.guid == lifecycle):
            return
        try:
            queue.put_nowait(event)
        except asyncio.QueueFull:
            overflowed.set()

    unsubscribe = services.bus.subscribe(put)
    send = JsonSender(ws, "meeting socket")
    cache: dict[str, MeetingTranscription | None] = {}

    def settings() -> MeetingTranscription | None:
        # Stabilisation and language of the interval: after a stop, its last finals keep the
        # configuration they had. (Redaction is the event's own: chime_events.py.)
        m = book.get(tenant, mid)
        config = m.transcription if m is not None else None
        if config is None:
            return next(iter(cache.values()), None)
        key = repr(config)
        if key not in cache:
            cache.clear()
            cache[key] = parse_configuration(config)
        return cache[key]

    def origin(participant: str) -> float:
        return book.origins.get((tenant, mid), {}).get(participant, time.time() * 1000)

    shaper = TranscriptShaper(origin)

    async def relay() -> None:
        while True:
            event = await queue.get()
            try:
                await deliver(event)
            finally:
                queue.task_done()

    async def deliver(event: CallEvent) -> None:
        if isinstance(event, UtteranceEvent):
            frame = shaper.frame(event, settings())
        else:
            frame = status_frame(event.data) if isinstance(event, CallStateEvent) else None
        if frame is not None:
            await send(frame)

    async def guard() -> None:
        await overflowed.wait()
        log.warning("meeting %s: a socket from %s does not read its events; closing it", mid, peer_of(ws))
        unsubscribe()
        relaying.cancel()
        await close(ws, Close.POLICY, "events are not read fast enough")

    async def kick(why: str) -> None:
        try:  # what was published before the deletion (its "stopped" status) goes out first
            await asyncio.wait_for(queue.join(), 5.0)
        except asyncio.TimeoutError:
            pass
        await close(ws, Close.NORMAL, why)

    forget = book.watch(tenant, mid, kick, attendee_id)
    relaying = asyncio.create_task(relay(), name=f"chime-events-{mid}")
    guarding = asyncio.create_task(guard(), name=f"chime-events-guard-{mid}")
    try:
        while True:  # the peer sends nothing we need; this notices it leaving
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    except Exception:
        log.debug("meeting socket ended", exc_info=True)
    finally:
        forget()
        unsubscribe()
        relaying.cancel()
        guarding.cancel()
        slot.release()
