"""Decoding a stream (a URL being pulled, bytes being pushed) to 16 kHz int16 chunks as it arrives.

`pcm_chunks` reads an open PyAV container's first audio stream and yields (channels x samples)
int16 chunks of about 100 ms, resampled by FFmpeg's resampler; `PushedBytes` is a file PyAV can
open whose bytes are written by another thread (a WebSocket), so a container can be decoded while
it is still arriving; `PushedContainer` runs that decoding on a thread of its own and hands the
chunks to the event loop (the pushed-audio sockets of the listen and memories surfaces).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any, Iterator, Union

import numpy as np

from callscribe.audio.rates import MODEL_RATE as RATE

log = logging.getLogger(__name__)

CHUNK_SAMPLES = RATE // 10  # 100 ms
MAX_BAD_PACKETS = 50  # in a row: past that the stream is not what it claims to be


def pcm_chunks(container: Any, channels: int) -> Iterator[np.ndarray]:
    """~100 ms chunks of the first audio stream, mixed down to mono or `channels` as they are."""
    import av

    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="s16p", layout="mono" if channels == 1 else stream.layout, rate=RATE)
    pending: list[np.ndarray] = []
    pending_n = 0
    for frame in _frames(container, stream):
        for out in resampler.resample(frame):
            pending.append(out.to_ndarray().reshape(channels, -1))
            pending_n += pending[-1].shape[1]
            if pending_n >= CHUNK_SAMPLES:
                yield np.concatenate(pending, axis=1)
                pending, pending_n = [], 0
    for out in resampler.resample(None):
        pending.append(out.to_ndarray().reshape(channels, -1))
    if pending:
        yield np.concatenate(pending, axis=1)


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames of one stream; a packet that does not decode is skipped, as players do."""
    import av

    bad = 0
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
            bad = 0
        except av.error.InvalidDataError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise


class PushedBytes:
    """A read-only, unseekable file fed by `write`; `read` blocks until bytes or `close` come."""

    def __init__(self, max_buffered: int = 8 << 20) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()
        self.max_buffered = max_buffered

    def write(self, data: bytes) -> bool:
        """Queue bytes; False when the reader is that far behind (the caller should refuse more)."""
        with self._cond:
            if self._size + len(data) > self.max_buffered:
                return False
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._cond.notify()
            return True

    def close(self) -> None:
        """No more bytes: reads return what is left, then b""."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._chunks or self._closed)
            if not self._chunks:
                return b""
            data = self._chunks.popleft()
            if 0 <= n < len(data):
                data, rest = data[:n], data[n:]
                self._chunks.appendleft(rest)
            self._size -= len(data)
            return data


#: What the decoding thread hands over: a (channels x samples) chunk, an error message, or None at the end.
Decoded = Union[np.ndarray, str, None]


class PushedContainer:
    """A container (WAV, Ogg/Opus, WebM, MP3: what FFmpeg reads without seeking) decoded as its bytes
    arrive. `write` the socket's bytes, `finish` at the end; `out` yields (channels x samples) int16
    chunks at RATE (one channel: the container's mixed; more: the container's own, which must be
    that many), then an error message or None when the stream is over."""

    rate = RATE

    def __init__(self, channels: int = 1, name: str = "pushed-container") -> None:
        self.channels = channels
        self.out: asyncio.Queue[Decoded] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._pipe = PushedBytes()  # bounded: a sender far ahead of the decoder is told so
        self._finished = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def write(self, data: bytes) -> bool:
        """False when the decoder is too far behind (the sender is much faster than real time)."""
        return self._finished or self._pipe.write(data)

    def finish(self) -> None:
        """No more bytes: what was written is decoded, then `out` yields None."""
        if not self._finished:
            self._finished = True
            self._pipe.close()

    def _emit(self, item: Decoded) -> None:
        try:
            self._loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closing

    def _run(self) -> None:
        import av

        try:
            with av.open(self._pipe, mode="r", metadata_errors="ignore",
                         options={"analyzeduration": "500000"}) as container:
                if not container.streams.audio:
                    raise ValueError("no audio stream in the container")
                found = container.streams.audio[0].codec_context.channels or 1
                if self.channels > 1 and found != self.channels:
                    raise ValueError(f"the audio has {found} channel(s), the request said {self.channels}")
                for chunk in pcm_chunks(container, self.channels):
                    self._emit(chunk)
            self._emit(None)
        except Exception as exc:  # PyAV's errors, or ours above: the socket closes saying so
            log.info("pushed container stream failed: %s", exc)
            self._emit(f"the audio cannot be decoded ({type(exc).__name__}: {str(exc)[:60]})")
        finally:
            self._finished = True
            self._pipe.close()  # nothing reads what is left
