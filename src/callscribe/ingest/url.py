"""Pulls audio from a URL (HTTP(S) file, HLS, RTMP, RTSP, ...) as a PulledSource (calls/media.py).

PyAV (FFmpeg) demuxes and decodes whatever the URL serves; one worker thread per source opens it,
decodes, resamples to 16 kHz int16 and hands ~100 ms chunks to the call on the event loop. Audio is
never fed faster than real time: a file arrives as a live source would, and a live source, which
cannot arrive faster, is unaffected. The thread blocks on each hand-over, so decoding never runs
ahead of the call.

How a pull ends is `SourceEnd(status, message)` (calls/media.py), handed to the media's `end` as
its reason, so the control surface that started it can tell its client why:

- ENDED: the file ended, or a live source sent no audio for `inactivity_timeout_s`;
- UNREACHABLE: the URL could not be opened (refused, 404, timeout); a live source (RTMP, RTSP, SRT,
  or a URL whose stream has no duration) is retried with backoff until `inactivity_timeout_s`;
- UNDECODABLE: it opened but holds no decodable audio (a text page, a corrupt file);
- STOPPED / SHUTDOWN: `finish()` by the control surface, or `stop()` by the registry.

Tracks: one track "speaker" (participant "speaker", all channels down-mixed), or with
`per_channel` one track per channel ("channel-0", ...; participants "speaker_0", ...). Only the
first track is connected at `start`, before the URL is opened (so a URL that cannot be opened
still ends a connected call, with its status); the other channels connect as a second media
session once the stream says how many there are.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from callscribe.audio.pcm_stream import RATE, pcm_chunks
from callscribe.calls.media import MediaCall, MediaRegistry, Participant, SourceEnd, TrackSpec
from callscribe.logsafe import url_for_log

log = logging.getLogger(__name__)

# No udp:// or tcp://: FFmpeg can be told through them to bind or listen on the gateway itself.
LIVE_SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "srt")
# What FFmpeg may open while reading a URL (an HLS playlist names further URLs): no file://, no
# pipes or local devices, whatever a playlist says.
PROTOCOLS = "http,https,tls,tcp,udp,rtp,rtmp,rtmps,rtsp,rtsps,srt,crypto,hls"
SCHEMES = ("http", "https") + LIVE_SCHEMES
READ_TIMEOUT_S = 5.0  # a blocking read returns within this, so stop() is noticed
MAX_BACKOFF_S = 8.0


class UrlSourceMaker:
    """The app's `UrlSources` (calls/media.py): what schemes a pull reads, and a new pull."""

    schemes: tuple[str, ...] = SCHEMES

    def __call__(self, url: str, *, per_channel: bool, inactivity_timeout_s: float) -> "UrlSource":
        return UrlSource(url, per_channel=per_channel, inactivity_timeout_s=inactivity_timeout_s)


class _Stopped(Exception):
    pass


class UrlSource:
    """One pull of one URL. `release()` begins the pull (once transcription is on); `finish(end)`
    ends it with the caller's status; `stop()` (the registry's) ends it as a shutdown."""

    def __init__(self, url: str, *, per_channel: bool = False, inactivity_timeout_s: float = 30.0):
        self.url = url
        self.per_channel = per_channel
        self.inactivity_timeout_s = inactivity_timeout_s
        self.fed_ms = 0.0
        self.end: SourceEnd | None = None
        self._released = threading.Event()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registry: MediaRegistry | None = None
        self._key = ("", "", "")  # tenant, namespace, guid
        self._media: list[MediaCall] = []  # the first session, then the extra channels' one
        self._tracks: list[str] = []
        self._ended = asyncio.Event()
        self._thread: threading.Thread | None = None

    # -- PulledSource ----------------------------------------------------------------------------

    async def start(self, registry: MediaRegistry, *, tenant: str, namespace: str, guid: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._registry = registry
        self._key = (tenant, namespace, guid)
        first = TrackSpec("channel-0", Participant("speaker_0", "speaker")) if self.per_channel else \
            TrackSpec("speaker", Participant("speaker", "speaker"))
        self._media = [await registry.media_connected(tenant=tenant, namespace=namespace, guid=guid, tracks=[first],
                                                      source="url", metadata={"url": url_for_log(self.url)})]
        self._tracks = [first.name]
        self._thread = threading.Thread(target=self._run, name=f"url-{guid[:8]}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        await self.finish(SourceEnd("shutdown", "Server shutting down"))

    # -- control -----------------------------------------------------------------------------------

    def release(self) -> None:
        """Transcription is on: open the URL and feed it."""
        self._released.set()

    async def finish(self, end: SourceEnd) -> None:
        """End the pull and its media with this status (the first end wins). Idempotent."""
        self._stopping.set()
        self._released.set()
        if self.end is not None:
            await self._ended.wait()
            return
        self.end = end
        try:
            for media in reversed(self._media):  # extra channels first: the last end names the reason
                await media.end(end.reason())
        finally:
            self._ended.set()

    # -- the worker thread -------------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _run(self) -> None:
        # Nothing is opened before transcription is on: a source that fails at once must end a task
        # that exists, not race the start that is still opening its legs.
        self._released.wait()
        try:
            end = self._pull()
        except _Stopped:
            return
        except Exception as exc:  # a bug, not the source: still end the task with a status
            log.exception("pulling %s failed", url_for_log(self.url))
            end = SourceEnd("error", f"Internal error: {type(exc).__name__}")
        if not self._stopping.is_set():
            try:
                self._call(self.finish(end))
            except RuntimeError:
                pass  # the loop is closing

    def _live_scheme(self) -> bool:
        return urlsplit(self.url).scheme.lower() in LIVE_SCHEMES

    def _pull(self) -> SourceEnd:
        """Open, decode and feed until the source ends; reconnect a live source with backoff."""
        import av

        live = self._live_scheme()
        last_audio = time.monotonic()
        backoff = 0.5
        opened_once = False
        while True:
            if self._stopping.is_set():
                raise _Stopped()
            try:
                # A short analysis: a live source probed for FFmpeg's default 5 s starts 5 s late.
                container = av.open(self.url, timeout=(10.0, READ_TIMEOUT_S),
                                    options={"analyzeduration": "500000", "protocol_whitelist": PROTOCOLS})
            except av.error.InvalidDataError as exc:
                return SourceEnd("undecodable", f"The source could not be decoded: {_why(exc)}")
            except (av.error.FFmpegError, OSError) as exc:
                if not live or time.monotonic() - last_audio > self.inactivity_timeout_s:
                    if opened_once:
                        return SourceEnd("ended", "The stream went away and did not come back")
                    # FFmpeg's own words stay in the log: they would tell a caller which ports answer.
                    log.info("opening %s failed: %s", url_for_log(self.url), _why(exc))
                    return SourceEnd("unreachable", "The source could not be reached")
                self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            fed_before = self.fed_ms
            try:
                if not container.streams.audio:
                    return SourceEnd("undecodable", "The source has no audio stream")
                live = live or container.duration is None
                self._decode(container)
            except av.error.InvalidDataError as exc:
                if not opened_once and self.fed_ms == fed_before:
                    return SourceEnd("undecodable", f"The source could not be decoded: {_why(exc)}")
            except (av.error.FFmpegError, OSError) as exc:  # a live source dropping is the usual case
                log.info("reading %s: %s", url_for_log(self.url), _why(exc))
            finally:
                container.close()
            got = self.fed_ms > fed_before
            if got:
                opened_once = True
                last_audio = time.monotonic()
                backoff = 0.5
            elif not opened_once and not live:  # a live source may just not have started yet
                return SourceEnd("undecodable", "The source holds no decodable audio")
            if not live:
                return SourceEnd("ended", "Stream ended")
            if time.monotonic() - last_audio > self.inactivity_timeout_s:
                return SourceEnd("ended", f"Stream ended: no audio for {self.inactivity_timeout_s:g} s")
            self._sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _decode(self, container: Any) -> None:
        """Feed every chunk of one connection, paced from its first."""
        channels = max(1, container.streams.audio[0].codec_context.channels or 1) if self.per_channel else 1
        if channels > len(self._tracks):
            self._connect_channels(channels)
        clock: list[float] = []
        for chunk in pcm_chunks(container, channels):
            self._feed(chunk, clock)

    def _connect_channels(self, channels: int) -> None:
        extra = [TrackSpec(f"channel-{i}", Participant(f"speaker_{i}", "speaker"))
                 for i in range(len(self._tracks), channels)]
        if not self._call(self._connect(extra)):
            raise _Stopped()
        self._tracks += [t.name for t in extra]

    async def _connect(self, tracks: list[TrackSpec]) -> bool:
        """Connect the other channels as a second session, unless the pull has ended meanwhile."""
        assert self._registry is not None
        if self.end is not None:
            return False
        tenant, namespace, guid = self._key
        media = await self._registry.media_connected(tenant=tenant, namespace=namespace, guid=guid, tracks=tracks,
                                                     source="url")
        if self.end is not None:  # finish() ran while it connected: it did not see this session
            await media.end(self.end.reason())
            return False
        self._media.append(media)
        return True

    def _feed(self, pcm: np.ndarray, clock: list[float]) -> None:
        """Hand one chunk (channels x samples) to the call, no earlier than real time allows
        (`clock` holds the wall-clock origin of the connection's pacing once its first chunk came)."""
        if self._stopping.is_set():
            raise _Stopped()
        if not clock:
            clock.append(time.monotonic() - self.fed_ms / 1000)
        self._sleep(clock[0] + self.fed_ms / 1000 - time.monotonic())
        if self._stopping.is_set():
            raise _Stopped()
        self._call(self._deliver(pcm))

    async def _deliver(self, pcm: np.ndarray) -> None:
        if self.end is not None:
            return
        for media, track, channel in zip(self._media_for_tracks(), self._tracks, pcm):
            await media.audio(track, np.ascontiguousarray(channel), RATE)
        self.fed_ms += pcm.shape[1] * 1000 / RATE

    def _media_for_tracks(self) -> list[MediaCall]:
        return [self._media[0]] + [self._media[-1]] * (len(self._tracks) - 1)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Stopped()


def _why(exc: BaseException) -> str:
    """FFmpeg's own words, without the URL it appends (which may carry a token)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]
