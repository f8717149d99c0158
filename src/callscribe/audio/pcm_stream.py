"""Decoding a stream (a URL being pulled, bytes being pushed) to 16 kHz int16 chunks as it arrives.

`pcm_chunks` reads an open PyAV container's first audio stream and yields (channels x samples)
int16 chunks of about 100 ms, resampled by FFmpeg's resampler; `PushedBytes` is a file PyAV can
open whose bytes are written by another thread (a WebSocket), so a container can be decoded while
it is still arriving.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Iterator

import numpy as np

from callscribe.audio.rates import MODEL_RATE as RATE

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
