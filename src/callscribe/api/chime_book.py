"""The meetings of the Chime surface: meetings and attendees, their join tokens, and each meeting's
transcription (on with a configuration, or off) and lifecycle.

A meeting is a call of the registry (namespace "chime", guid = MeetingId) whose participants are its
attendees, one track each (track name = participant id = AttendeeId). Its media arrives from
whatever transport an attendee uses (the PCM socket here, WebRTC): each asks `resolve(JoinToken)`
(registered in `Services.media_grants`) and connects the grant's participant. Transcription is the
meeting's, not a connection's: it may be started before anyone joins, and an attendee whose media
connects while it is on is transcribed (the registry joins late tracks to an open interval; when
no interval is open, because nobody was connected, the book opens one).

Lifecycle (started, stopped, interrupted, resumed, failed) is published on the bus as a
CallStateEvent of the meeting's lifecycle record (namespace "chime-meeting", guid
"<MeetingId>:transcription", its own sequence), so the persister stores it and writes its
EventBridge webhook in one transaction, and the meeting socket relays it.

Kept across a restart (in `<data_dir>/chime-meetings.json`, mode 0600, rewritten shortly after
changes, off the event loop, atomically; a file that cannot be parsed is kept aside as
`.corrupt-<time>` with an error in the log, never overwritten):
meetings, attendees and their join tokens, each meeting's transcription configuration and whether
it is on, the lifecycle sequence. Not kept: media connections (attendees reconnect), partials in
flight. A meeting whose transcription was on gets TranscriptionInterrupted at start-up and
TranscriptionResumed when an attendee's media is transcribed again.

Every few seconds (`_tick`), as Chime does: a meeting ends (as DeleteMeeting) after
`chime_meeting_idle_s` without attendee media, or `chime_meeting_max_s` after its creation; and the
attendees of a meeting whose transcription is on but whose media has no leg (the model was loading,
no capacity) are joined again, until they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from callscribe.api.chime_file import MeetingsFile
from callscribe.api.chime_settings import MeetingTranscription, parse_configuration
from callscribe.api.chime_wire import (LIFECYCLE_NAMESPACE, LIFECYCLE_STATE, NAMESPACE, ROLE, SURFACE,
                                       lifecycle_data)
from callscribe.calls.events import CallEvent, CallRef, CallStateEvent
from callscribe.calls.media import MediaGrant, Participant
from callscribe.calls.registry import (AlreadyStarted, AlreadyStopped, CallNotFound, MediaEnding, NoCapacity,
                                       NotReady, RegistryError, UnsupportedLanguage)

if TYPE_CHECKING:
    from callscribe.calls.call import Call
    from callscribe.services import Services

log = logging.getLogger(__name__)

MAX_MEETINGS_PER_TENANT = 1000
DEFAULT_MAX_ATTENDEES = 250
SENDS_AUDIO = ("SendReceive", "Send")
DEFAULT_CAPABILITIES = {"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"}

Kick = Callable[[str], Awaitable[None]]  # closes one live connection, saying why
CLOSE_DEADLINE_S = 6.0  # DeleteMeeting/DeleteAttendee wait this long in all for connections to close
TICK_S = 3.0  # how often expiry and rejoins are looked at (less with a short idle setting)


class LimitExceeded(Exception):
    pass


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Attendee:
    attendee_id: str
    external_user_id: str
    join_token: str
    capabilities: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CAPABILITIES))


@dataclass
class Meeting:
    meeting_id: str
    tenant: str
    external_meeting_id: str
    media_region: str
    client_request_token: str
    meeting_host_id: str | None = None
    features: dict[str, Any] | None = None
    primary_meeting_id: str | None = None
    tenant_ids: list[str] | None = None
    created_at: float = field(default_factory=time.time)
    attendees: dict[str, Attendee] = field(default_factory=dict)
    transcription: dict[str, Any] | None = None  # the configuration while transcription is on
    lifecycle_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    lifecycle_seq: int = 0
    interrupted: bool = False

    @property
    def max_attendees(self) -> int:
        return int(((self.features or {}).get("Attendee") or {}).get("MaxCount") or DEFAULT_MAX_ATTENDEES)

    def settings(self) -> MeetingTranscription | None:
        return parse_configuration(self.transcription) if self.transcription is not None else None


def _parse(raw: dict[str, Any]) -> list[Meeting]:
    meetings = []
    for item in raw.get("meetings", []):
        attendees = {a["attendee_id"]: Attendee(**a) for a in item.pop("attendees", [])}
        meetings.append(Meeting(**item, attendees=attendees))
    return meetings


class MeetingBook:
    def __init__(self, data_dir: Path, services: "Services") -> None:
        self.file = MeetingsFile(data_dir, self._snapshot)
        self.services = services
        self._meetings: dict[tuple[str, str], Meeting] = {}
        self._tokens: dict[str, tuple[str, str, str]] = {}  # sha256(token) -> (tenant, meeting, attendee)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._kicks: dict[tuple[str, str], dict[Kick, str | None]] = {}  # live sockets -> attendee (or None)
        # epoch ms at which each attendee's track timeline began, for the JS SDK's epoch times
        self.origins: dict[tuple[str, str], dict[str, float]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # since when (epoch s) each meeting has had no media; None while it has
        self._idle_since: dict[tuple[str, str], float | None] = {}
        self._started_at = time.time()  # meetings loaded at start-up count as idle from here
        self._ticker: asyncio.Task[None] | None = None
        self._load()

    # -- persistence (api/chime_file.py) ----------------------------------------------------------------

    def _load(self) -> None:
        meetings = self.file.load(_parse) or []
        for m in meetings:
            self._meetings[(m.tenant, m.meeting_id)] = m
            for a in m.attendees.values():
                self._tokens[_digest(a.join_token)] = (m.tenant, m.meeting_id, a.attendee_id)

    def save(self) -> None:
        self.file.changed()

    async def flush(self) -> None:
        await self.file.flush()

    def _snapshot(self) -> dict[str, Any]:
        return {"version": 1, "meetings": [
            {**{k: v for k, v in asdict(m).items() if k != "attendees"}, "attendees": [asdict(a) for a in m.attendees.values()]}
            for m in self._meetings.values()]}

    def begin(self) -> None:
        """At start-up (the bus and registry exist): watch media, and tell meetings whose transcription
        was on that it is interrupted until their attendees reconnect."""
        self.services.bus.subscribe(self._on_event)
        self._ticker = asyncio.create_task(self._tick_forever(), name="chime-meetings-tick")
        for m in self._meetings.values():
            if m.transcription is not None and not m.interrupted:
                m.interrupted = True
                self._lifecycle(m, "interrupted", "the server restarted; transcription resumes when attendees reconnect")

    # -- meetings and attendees ---------------------------------------------------------------------

    def lock(self, tenant: str, meeting_id: str) -> asyncio.Lock:
        return self._locks.setdefault((tenant, meeting_id), asyncio.Lock())

    def get(self, tenant: str, meeting_id: str) -> Meeting | None:
        return self._meetings.get((tenant, meeting_id.lower()))

    def create_meeting(self, tenant: str, req: dict[str, Any]) -> Meeting:
        token = req["ClientRequestToken"]
        for m in self._meetings.values():  # the idempotency token: a retry gets the same meeting
            if m.tenant == tenant and m.client_request_token == token:
                return m
        if sum(1 for t, _ in self._meetings if t == tenant) >= MAX_MEETINGS_PER_TENANT:
            raise LimitExceeded(f"The maximum of {MAX_MEETINGS_PER_TENANT} meetings is reached")
        m = Meeting(meeting_id=str(uuid.uuid4()), tenant=tenant, external_meeting_id=req["ExternalMeetingId"],
                    media_region=req["MediaRegion"], client_request_token=token,
                    meeting_host_id=req.get("MeetingHostId"), features=req.get("MeetingFeatures"),
                    primary_meeting_id=req.get("PrimaryMeetingId"), tenant_ids=req.get("TenantIds"))
        self._meetings[(tenant, m.meeting_id)] = m
        self.save()
        return m

    def add_attendee(self, m: Meeting, external_user_id: str, capabilities: dict[str, str] | None) -> Attendee:
        for a in m.attendees.values():  # Chime answers an existing ExternalUserId with its attendee
            if a.external_user_id == external_user_id:
                return a
        if len(m.attendees) >= m.max_attendees:
            raise LimitExceeded(f"The meeting has its maximum of {m.max_attendees} attendees")
        a = Attendee(str(uuid.uuid4()), external_user_id, secrets.token_urlsafe(32),
                     dict(capabilities or DEFAULT_CAPABILITIES))
        m.attendees[a.attendee_id] = a
        self._tokens[_digest(a.join_token)] = (m.tenant, m.meeting_id, a.attendee_id)
        self.save()
        return a

    async def delete_attendee(self, m: Meeting, attendee_id: str) -> None:
        a = m.attendees.pop(attendee_id)
        self._tokens.pop(_digest(a.join_token), None)
        self.save()
        await self._end_media(m, attendee_id, "attendee deleted")

    async def delete_meeting(self, m: Meeting, why: str = "meeting deleted") -> None:
        """DeleteMeeting ends everything: transcription (stopped), every attendee's media and socket."""
        async with self.lock(m.tenant, m.meeting_id):
            if not self._current(m):
                return  # deleted by a request that held the lock first
            if m.transcription is not None:
                await self._stop(m)
            for a in m.attendees.values():
                self._tokens.pop(_digest(a.join_token), None)
            self._meetings.pop((m.tenant, m.meeting_id), None)
            self.save()
            await self._end_media(m, None, why)
            # The lifecycle record ends with its meeting, so the call list does not show it live.
            m.lifecycle_seq += 1
            ref = CallRef(m.lifecycle_id, m.tenant, LIFECYCLE_NAMESPACE, f"{m.meeting_id}:transcription")
            self.services.bus.publish(CallStateEvent(ref, m.lifecycle_seq, "media-ended",
                                                     {"reason": why}, surface=SURFACE))
            self.origins.pop((m.tenant, m.meeting_id), None)
            self._idle_since.pop((m.tenant, m.meeting_id), None)
        self._locks.pop((m.tenant, m.meeting_id), None)

    def attendee_of(self, token: str) -> tuple[Meeting, Attendee] | None:
        found = self._tokens.get(_digest(token)) if token else None
        if found is None:
            return None
        m = self._meetings.get(found[:2])
        a = m.attendees.get(found[2]) if m is not None else None
        return (m, a) if m is not None and a is not None else None

    async def resolve(self, token: str) -> MediaGrant | None:
        """The MediaGrant of a JoinToken: that attendee in that meeting's call; None for a token of a
        deleted attendee or meeting, or of an attendee whose Audio capability sends nothing."""
        found = self.attendee_of(token)
        if found is None or found[1].capabilities.get("Audio", "SendReceive") not in SENDS_AUDIO:
            return None
        m, a = found
        return MediaGrant(m.tenant, NAMESPACE, m.meeting_id,
                          Participant(a.attendee_id, ROLE, name=a.external_user_id, external_id=a.external_user_id),
                          source=SURFACE)

    def watch(self, tenant: str, meeting_id: str, kick: Kick, attendee_id: str | None = None) -> Callable[[], None]:
        """Register a live socket of the meeting (of one attendee, or a subscriber), closed by the
        deletion of either; returns the function that forgets it."""
        kicks = self._kicks.setdefault((tenant, meeting_id), {})
        kicks[kick] = attendee_id

        def forget() -> None:
            kicks.pop(kick, None)

        return forget

    async def _end_media(self, m: Meeting, attendee_id: str | None, why: str) -> None:
        """End the media and close the sockets of the meeting (or of one attendee), all at once and
        for at most CLOSE_DEADLINE_S in all: the caller holds the meeting's lock. What is not done
        by then goes on in the background."""
        closing: list[Awaitable[None]] = []
        call = self._call(m)
        if call is not None:
            for name, track in list(call.tracks.items()):
                if track.session is not None and (attendee_id is None or name == attendee_id):
                    closing.append(track.session.end(why))
        for kick, who in list(self._kicks.get((m.tenant, m.meeting_id), {}).items()):
            if attendee_id is None or who == attendee_id:
                closing.append(kick(why))
        if attendee_id is None:
            self._kicks.pop((m.tenant, m.meeting_id), None)
        if not closing:
            return
        tasks = [asyncio.ensure_future(c) for c in closing]
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_DEADLINE_S)
        for task in tasks:
            if task in pending:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("meeting %s: closing a connection failed: %r", m.meeting_id, task.exception())

    # -- transcription ------------------------------------------------------------------------------

    def _current(self, m: Meeting) -> bool:
        return self._meetings.get((m.tenant, m.meeting_id)) is m

    def _call(self, m: Meeting) -> "Call | None":
        registry = self.services.registry
        return registry.find(m.tenant, m.meeting_id, NAMESPACE) if registry is not None else None

    def _lifecycle(self, m: Meeting, kind: str, message: str | None = None,
                   settings: MeetingTranscription | None = None) -> None:
        settings = settings or m.settings()
        m.lifecycle_seq += 1
        data = lifecycle_data(kind, m, settings.configuration_json if settings else "{}", message,
                              settings.region if settings else None)
        ref = CallRef(m.lifecycle_id, m.tenant, LIFECYCLE_NAMESPACE, f"{m.meeting_id}:transcription")
        self.save()
        self.services.bus.publish(CallStateEvent(ref, m.lifecycle_seq, LIFECYCLE_STATE, data, surface=SURFACE))

    async def start_transcription(self, m: Meeting, settings: MeetingTranscription) -> None:
        """StartMeetingTranscription (the model is ready; the language may still be refused, which is a
        TranscriptFailed event, not an HTTP error). A start while on is an update: the open interval
        closes and one with the new configuration opens."""
        registry = self.services.registry
        assert registry is not None
        async with self.lock(m.tenant, m.meeting_id):
            if not self._current(m):
                return  # deleted while this start waited for the lock
            try:
                registry.check_language(settings.language)
            except UnsupportedLanguage:
                if m.transcription is not None:
                    await self._close_legs(m)
                    m.transcription = None
                self._lifecycle(m, "failed", f"BadRequestException: The language code {settings.language} is not "
                                "supported by this server's speech model", settings)
                return
            refused = settings.unsupported_message()
            if refused is not None:  # as Chime does when Transcribe refuses a vocabulary (chime_settings.py)
                if m.transcription is not None:
                    await self._close_legs(m)
                    m.transcription = None
                self._lifecycle(m, "failed", refused, settings)
                return
            await self._close_legs(m)
            m.transcription, m.interrupted = settings.configuration, False
            self._lifecycle(m, "started", None, settings)
            call = self._call(m)
            if call is not None and call.live:
                try:
                    await registry.start_streaming(m.tenant, NAMESPACE, m.meeting_id, settings.stream_params(m.meeting_id))
                except (CallNotFound, MediaEnding, AlreadyStarted):
                    pass  # nobody connected (any more): attendees are transcribed when they connect
                except NoCapacity:
                    m.transcription = None
                    self._lifecycle(m, "failed", "LimitExceededException: no transcription capacity on this server",
                                    settings)

    async def stop_transcription(self, m: Meeting) -> None:
        async with self.lock(m.tenant, m.meeting_id):
            if m.transcription is not None and self._current(m):
                await self._stop(m)

    async def _stop(self, m: Meeting) -> None:
        settings = m.settings()
        m.transcription, m.interrupted = None, False
        self.save()
        await self._close_legs(m)  # the interval's last finals are out before the status says stopped
        self._lifecycle(m, "stopped", None, settings)

    async def _close_legs(self, m: Meeting) -> None:
        registry = self.services.registry
        if registry is None:
            return
        try:
            await registry.stop_streaming(m.tenant, NAMESPACE, m.meeting_id)
        except (CallNotFound, AlreadyStopped):
            pass

    def _on_event(self, event: CallEvent) -> None:
        """Media of a meeting connected: note its timeline origin, and transcribe it if the meeting's
        transcription is on and the registry has no open interval for it to join."""
        if not isinstance(event, CallStateEvent) or event.call.namespace != NAMESPACE \
                or event.state != "media-connected":
            return
        m = self._meetings.get((event.call.tenant, event.call.guid))
        if m is None:
            return
        call = self._call(m)
        now_ms = time.time() * 1000
        origins = self.origins.setdefault((m.tenant, m.meeting_id), {})
        for name, pid in (event.data.get("participants") or {}).items():
            track = call.tracks.get(name) if call is not None else None
            origins[pid] = now_ms - (float(track.position_ms) if track is not None else 0.0)
        if m.transcription is not None:
            task = asyncio.create_task(self._join(m, list((event.data.get("participants") or {}).values())))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _join(self, m: Meeting, participants: list[str]) -> None:
        registry = self.services.registry
        async with self.lock(m.tenant, m.meeting_id):
            call = self._call(m)
            settings = m.settings()
            if registry is None or call is None or settings is None or not call.live or not self._current(m):
                return
            await call.joined()  # the registry's own join of late tracks goes first
            missing = [p for p in participants if p not in call.legs]
            try:
                if missing:
                    await registry.start_streaming(m.tenant, NAMESPACE, m.meeting_id,
                                                   settings.stream_params(m.meeting_id),
                                                   participants=missing if call.legs else None)
            except (NoCapacity, NotReady) as exc:  # joined again by _tick while it lasts
                if not m.interrupted:
                    m.interrupted = True
                    self._lifecycle(m, "interrupted", "no transcription capacity for an attendee who joined"
                                    if isinstance(exc, NoCapacity) else "the speech model is not ready")
                return
            except (AlreadyStarted, CallNotFound, MediaEnding):
                pass
            except RegistryError as exc:
                log.warning("meeting %s: transcribing an attendee who joined failed: %r", m.meeting_id, exc)
                return
            if m.interrupted and any(p in call.legs for p in participants):
                m.interrupted = False
                self._lifecycle(m, "resumed")

    # -- expiry and rejoins ----------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        settings = self.services.settings
        every = min(TICK_S, settings.chime_meeting_idle_s / 2)
        while True:
            await asyncio.sleep(every)
            try:
                await self._tick(time.time())
            except Exception:
                log.exception("chime meetings: expiry and rejoins failed; tried again in %.0f s", every)

    async def _tick(self, now: float) -> None:
        """End the meetings idle or old enough; join the media of transcribed meetings that has no leg."""
        settings = self.services.settings
        ready = getattr(self.services, "ready", None)
        for m in list(self._meetings.values()):
            key = (m.tenant, m.meeting_id)
            call = self._call(m)
            live = call is not None and call.live
            if live:
                self._idle_since[key] = None
            elif key not in self._idle_since:  # nobody joined yet (here): idle since creation or start-up
                self._idle_since[key] = max(m.created_at, self._started_at)
            elif self._idle_since[key] is None:  # the last media ended since the last look
                self._idle_since[key] = now
            since = self._idle_since[key]
            idle = now - since if since is not None else 0.0
            if idle >= settings.chime_meeting_idle_s:
                await self.delete_meeting(m, f"meeting ended: no attendee media for {idle:.0f} s")
            elif now - m.created_at >= settings.chime_meeting_max_s:
                await self.delete_meeting(m, "meeting ended: it reached its maximum duration")
            elif live and call is not None and m.transcription is not None and (ready is None or ready.is_set()):
                missing = [t.participant.id if t.participant is not None else t.name
                           for t in (call.tracks[name] for name in call.live_tracks())]
                missing = [p for p in missing if p not in call.legs]
                if missing:
                    await self._join(m, missing)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.file.close()
