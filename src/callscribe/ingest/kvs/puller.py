"""The Kinesis Video pull behind an `amazonconnect` call: a `PulledSource` (calls/media.py).

GetDataEndpoint(GET_MEDIA), then GetMedia from the start selector, through botocore with the
standard credential chain (a profile with role_arn assumes a role) and endpoint settings
(AWS_ENDPOINT_URL_KINESIS_VIDEO for the control plane; AWS_ENDPOINT_URL_KINESIS_VIDEO_MEDIA, when
set, instead of the returned data endpoint), in the region of the stream's ARN. Each connection
is read by its own thread (a GetMedia response is a blocking, never-ending body; the shared
executor must not be held by it) that hands chunks to the event loop, where the Matroska is parsed
and the audio fed to the call.

The pull ends the call's media when the stream's ContactId changes (Connect reuses streams for
the next contact), on a GetMedia error tag, after `idle_timeout_s` without a new fragment, or
when stopped. A dropped connection resumes with the continuation token (or after the last
delivered fragment); fragments are delivered whole and at most once, so nothing is duplicated or
lost. ASAPP's stop-streaming only pauses transcription: the pull goes on and the audio is counted
and dropped, so a later start resumes at live audio.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from callscribe.calls.media import (SOURCE_ERROR_EVENT, MediaCall, MediaRefused, MediaRegistry, SourceFactory)
from callscribe.ingest.base import TrackTimeline
from callscribe.ingest.kvs import connect
from callscribe.ingest.kvs.ebml import EbmlError, MkvReader

log = logging.getLogger("callscribe.ingest.kvs")

_ARN = re.compile(r"^arn:aws[a-z-]*:kinesisvideo:([a-z]{2}(?:-[a-z]+)+-\d):(\d{12}):"
                  r"stream/([A-Za-z0-9_.-]{1,256})/(\d{1,20})$")
_FRAGMENT = re.compile(r"^\d{1,64}$")
CHUNK_BYTES = 16384
# ClientError codes that no retry will cure: the stream as given cannot be read by us.
STREAM_ERRORS = frozenset({"ResourceNotFoundException", "NotAuthorizedException", "AccessDeniedException",
                           "InvalidArgumentException", "InvalidEndpointException", "UnrecognizedClientException",
                           "AccessDeniedForDependencyException"})


class StreamUnusable(MediaRefused):
    """The stream cannot be read as given (no such stream, not allowed, bad argument)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, kind="unusable")


class NoMedia(MediaRefused):
    """The stream gave no Connect audio in time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, kind="no-media")


@dataclass(frozen=True)
class StreamArn:
    arn: str
    region: str
    name: str


def parse_stream_arn(value: str) -> StreamArn:
    """A Kinesis Video stream ARN, or ValueError."""
    m = _ARN.match(value)
    if m is None:
        raise ValueError("not a Kinesis Video stream ARN (arn:aws:kinesisvideo:<region>:<account>:stream/<name>/<id>)")
    return StreamArn(value, m.group(1), m.group(3))


def valid_fragment_number(value: str) -> bool:
    return bool(_FRAGMENT.match(value))


@dataclass(frozen=True)
class PullSettings:
    start_timeout_s: float = 10.0  # for the first Connect audio, before start-streaming gives up
    idle_timeout_s: float = 20.0  # without a new fragment, the contact is over
    read_timeout_s: float = 5.0  # a silent connection is dropped and resumed after this
    max_backoff_s: float = 2.0


class _Stop(Exception):
    """The pull is over; `reason` ends the media."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


class KvsPull:
    """Pulls one Kinesis Video stream into one call (a `PulledSource`)."""

    def __init__(self, arn: StreamArn, *, selector: str = "NOW", after_fragment: str | None = None,
                 settings: PullSettings = PullSettings(), observe_lag: Callable[[float], None] | None = None):
        self.arn = arn
        self.settings = settings
        self._start: dict[str, str] = {"StartSelectorType": selector}
        if selector == "FRAGMENT_NUMBER" and after_fragment:
            self._start["AfterFragmentNumber"] = after_fragment
        self._observe_lag = observe_lag
        self._task: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[None] | None = None
        self._released = asyncio.Event()
        self._media: MediaCall | None = None
        self._stopping = threading.Event()
        self._media_client: Any = None
        self._contact: str | None = None
        self._delivered: int | None = None  # number of the last fragment delivered
        self._token: str | None = None
        self._base_ms: int | None = None
        self._timelines: dict[str, TrackTimeline] = {}
        self._last_error: str | None = None
        self.end_reason: str | None = None
        self.refusal: MediaRefused | None = None  # why start failed, for the control surface's answer

    # -- PulledSource ------------------------------------------------------------------------------

    async def start(self, registry: MediaRegistry, *, tenant: str, namespace: str, guid: str) -> None:
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._task = asyncio.create_task(self._run(registry, tenant, namespace, guid), name=f"kvs-{guid}")
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), self.settings.start_timeout_s)
            # the caller opens its legs before it next yields: the first fragment is fed after that
            self._released.set()
        except asyncio.TimeoutError:
            await self.stop()
            if self._last_error:
                self.refusal = MediaRefused(f"stream {self.arn.name} could not be read: {self._last_error}")
            else:
                self.refusal = NoMedia(f"no Connect audio in stream {self.arn.name} within "
                                       f"{self.settings.start_timeout_s:g} s")
            raise self.refusal from None
        except MediaRefused as refused:
            await self.stop()
            self.refusal = refused
            raise
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self._media is not None and self.end_reason is None:
            # The cancelled pull did not end its media: a call left live with nothing feeding it
            # would take legs (and answer success) for audio that never comes.
            self.end_reason = "kvs-stopped"
            await self._media.end(self.end_reason)

    # -- the pull ------------------------------------------------------------------------------------

    async def _run(self, registry: MediaRegistry, tenant: str, namespace: str, guid: str) -> None:
        key = (tenant, namespace, guid)
        try:
            reason = await self._pull(registry, key)
        except _Stop as stop:
            reason = stop.reason
        except MediaRefused as refused:
            if self._media is None:
                self._fail(refused)
                return
            reason = f"kvs-refused: {refused.reason}"
        except Exception as exc:  # a bug must not leave the call live forever
            log.exception("kvs pull of %s failed", self.arn.name)
            reason = f"kvs-failed: {exc.__class__.__name__}"
        self.end_reason = reason
        if self._media is not None:
            log.info("kvs pull of %s for %s ended: %s", self.arn.name, guid, reason)
            await self._media.event("kvs-ended", {"reason": reason, "fragment": _str(self._delivered)})
            if reason.startswith("kvs-error"):
                await self._media.event(SOURCE_ERROR_EVENT, {"reason": reason})
            await self._media.end(reason)
        elif self._last_error:
            self._fail(MediaRefused(f"stream {self.arn.name} could not be read: {self._last_error}"))
        elif reason == "inactive":
            self._fail(NoMedia(f"no Connect audio in stream {self.arn.name}"))
        else:
            self._fail(MediaRefused(reason))

    def _fail(self, refused: MediaRefused) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(refused)

    async def _pull(self, registry: MediaRegistry, key: tuple[str, str, str]) -> str:
        backoff = 0.1
        last_progress = time.monotonic()
        while not self._stopping.is_set():
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            stop = threading.Event()
            thread = threading.Thread(target=self._read_connection, args=(self._selector(), queue, stop,
                                                                           asyncio.get_running_loop()),
                                      name=f"kvs-read-{self.arn.name}", daemon=True)
            thread.start()
            reader, fragments = MkvReader(), connect.FragmentAssembler()
            try:
                while True:
                    # until the media connects, start() bounds the wait (start_timeout_s)
                    idle = self.settings.idle_timeout_s if self._media is not None else float("inf")
                    wait = idle - (time.monotonic() - last_progress)
                    if wait <= 0:
                        return "inactive"
                    try:
                        kind, value = await asyncio.wait_for(queue.get(), None if wait == float("inf") else wait)
                    except asyncio.TimeoutError:
                        return "inactive"
                    if kind == "data":
                        events = fragments.feed(reader.feed(value))
                    elif kind == "eof":
                        try:
                            events = fragments.feed(reader.close())
                        except EbmlError:
                            events = []
                        events += fragments.close()
                    else:
                        self._on_error(value)
                        events = fragments.close()
                    for event in events:
                        if await self._handle(event, registry, key):
                            last_progress = time.monotonic()
                            backoff = 0.1
                    if kind != "data":
                        break
            except EbmlError as exc:
                log.warning("kvs stream %s unreadable at byte %d: %s", self.arn.name, reader.offset, exc)
                self._last_error = f"unreadable Matroska: {exc}"
            finally:
                stop.set()
            # resume: 5 GetMedia calls per second per stream at most, so never spin
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.max_backoff_s)
        return "stopped"

    def _on_error(self, exc: BaseException) -> None:
        code = _error_code(exc)
        if code in STREAM_ERRORS:
            raise StreamUnusable(f"stream {self.arn.name}: {code}")
        self._last_error = code or exc.__class__.__name__
        log.info("kvs connection to %s dropped (%s); resuming", self.arn.name, self._last_error)

    def _selector(self) -> dict[str, str]:
        if self._token:
            return {"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": self._token}
        if self._delivered is not None:
            return {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": str(self._delivered)}
        return dict(self._start)

    async def _handle(self, event: connect.Event, registry: MediaRegistry, key: tuple[str, str, str]) -> bool:
        """Act on one fragment event; True when the stream made progress. Raises _Stop."""
        frag = event.fragment
        if frag.error is not None:
            if self._media is None and frag.tags.get(connect.ERROR_CODE, "").startswith("4"):
                # 4xxx: the fragment asked for does not exist or the stream's key cannot be used
                raise StreamUnusable(f"stream {self.arn.name}: GetMedia error {frag.error}")
            raise _Stop(f"kvs-error {frag.error}")
        if event.kind == "done":
            if frag.tags.get(connect.CONTINUATION_TOKEN) and self._delivered is not None \
                    and frag.number is not None and _int(frag.number) == self._delivered:
                self._token = frag.tags[connect.CONTINUATION_TOKEN]
            lag = frag.tags.get(connect.MILLIS_BEHIND_NOW)
            if lag is not None and self._observe_lag is not None and lag.isdigit():
                self._observe_lag(int(lag) / 1000)
            return False
        number = _int(frag.number)
        if number is not None and self._delivered is not None and number <= self._delivered:
            return True  # already delivered before the connection dropped
        contact = frag.contact_id
        if contact:
            if self._contact is None:
                self._contact = contact
            elif contact != self._contact:
                raise _Stop("contact-changed")
        names = frag.track_names()
        if not names:
            return True
        if self._media is None:
            tenant, namespace, guid = key
            self._media = await registry.media_connected(
                tenant=tenant, namespace=namespace, guid=guid, tracks=connect.track_specs(names),
                source="amazonconnect-kvs",
                metadata={"stream": self.arn.name, "region": self.arn.region, "contact_id": contact or ""})
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
            await self._media.event("kvs-fragment", {"fragment": frag.number, "contact_id": contact})
            await self._released.wait()
        await self._deliver(frag)
        if number is not None:
            self._delivered = number
            self._token = None  # the next token read belongs to this fragment or a later one
        return True

    async def _deliver(self, frag: connect.Fragment) -> None:
        assert self._media is not None
        for track, time_ms, payload in frag.blocks:
            samples = connect.pcm(payload)
            if not len(samples):
                continue
            if self._base_ms is None:
                self._base_ms = time_ms
            timeline = self._timelines.setdefault(
                track, TrackTimeline(connect.SAMPLE_RATE, jitter_ms=20, max_gap_ms=24 * 3600_000))
            drop, stamp = timeline.place(max(0, time_ms - self._base_ms), len(samples))
            if drop < len(samples):
                await self._media.audio(track, samples[drop:], connect.SAMPLE_RATE, stamp)

    # -- the reading thread ----------------------------------------------------------------------------

    def _read_connection(self, selector: dict[str, str], queue: asyncio.Queue[tuple[str, Any]],
                         stop: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:
                stop.set()  # the loop is gone

        body = None
        try:
            body = self._get_media(selector)
            raw = getattr(body, "_raw_stream", None)
            read = raw.read1 if raw is not None and hasattr(raw, "read1") else body.read
            while not stop.is_set() and not self._stopping.is_set():
                data = read(CHUNK_BYTES)
                if not data:
                    put("eof", None)
                    return
                put("data", bytes(data))
        except Exception as exc:
            if not stop.is_set():
                put("error", exc)
        finally:
            if body is not None:
                try:
                    body.close()
                except Exception:
                    pass

    def _client(self) -> Any:
        """The GetMedia client, made once per pull (botocore clients are thread-safe)."""
        if self._media_client is None:
            import boto3  # imported on first pull: most deployments never pull
            from botocore.config import Config

            session = boto3.session.Session(region_name=self.arn.region)
            # the pull retries and resumes by itself: botocore retries once, briefly, so a start
            # learns within start_timeout_s that AWS cannot be reached
            config = Config(connect_timeout=min(5.0, self.settings.start_timeout_s / 4),
                            read_timeout=self.settings.read_timeout_s,
                            retries={"mode": "standard", "total_max_attempts": 2})
            control = session.client("kinesisvideo", config=config)
            endpoint = control.get_data_endpoint(StreamARN=self.arn.arn, APIName="GET_MEDIA")["DataEndpoint"]
            kwargs: dict[str, Any] = {}
            if not os.environ.get("AWS_ENDPOINT_URL_KINESIS_VIDEO_MEDIA"):  # else botocore reads that
                kwargs["endpoint_url"] = endpoint
            self._media_client = session.client("kinesis-video-media", config=config, **kwargs)
        return self._media_client

    def _get_media(self, selector: dict[str, str]) -> Any:
        return self._client().get_media(StreamARN=self.arn.arn, StartSelector=selector)["Payload"]


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def amazon_connect_sources(settings: Any, observe_lag: Callable[[float], None] | None = None) -> SourceFactory:
    """The source factory for ASAPP's amazonConnectParams ({streamArn, startSelectorType,
    afterFragmentNumber}): a KvsPull, or ValueError naming the parameter that is wrong."""
    pull_settings = PullSettings(start_timeout_s=settings.kvs_start_timeout_s,
                                 idle_timeout_s=settings.kvs_idle_timeout_s,
                                 read_timeout_s=settings.kvs_read_timeout_s)

    def make(params: Mapping[str, Any]) -> KvsPull:
        try:
            arn = parse_stream_arn(str(params.get("streamArn") or ""))
        except ValueError as exc:
            raise ValueError(f"amazonConnectParams.streamArn is {exc}") from None
        selector = str(params.get("startSelectorType") or "NOW")
        after = params.get("afterFragmentNumber")
        if selector == "FRAGMENT_NUMBER" and not valid_fragment_number(str(after or "")):
            raise ValueError("amazonConnectParams.afterFragmentNumber must be a fragment number (digits)")
        return KvsPull(arn, selector=selector, after_fragment=str(after) if selector == "FRAGMENT_NUMBER" else None,
                       settings=pull_settings, observe_lag=observe_lag)

    return make
