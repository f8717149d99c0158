"""The audio of a listen request: raw frames (linear16, mulaw, alaw, interleaved by channel) decoded
in place, or a container (WAV, Ogg/Opus, WebM, MP3, FLAC: what ffmpeg reads without seeking)
decoded by PyAV on a thread of its own as the bytes arrive, as a browser's MediaRecorder sends it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Union

import numpy as np

from callscribe.audio.codecs import alaw_decode, ulaw_decode
from callscribe.audio.pcm_stream import PushedBytes
from callscribe.audio.rates import MODEL_RATE
from callscribe.api.listen_params import ListenOptions

log = logging.getLogger(__name__)


class AudioDecoder:
    """Raw binary frames -> (samples, channels) int16, keeping a partial sample frame for the next."""

    def __init__(self, opts: ListenOptions):
        assert opts.encoding is not None
        self.encoding = opts.encoding
        self.rate = opts.sample_rate or MODEL_RATE
        self.channels = opts.channels
        self._buf = b""

    def decode(self, data: bytes) -> np.ndarray:
        self._buf += data
        width = (2 if self.encoding == "linear16" else 1) * self.channels
        usable = len(self._buf) - len(self._buf) % width
        chunk, self._buf = self._buf[:usable], self._buf[usable:]
        if self.encoding == "linear16":
            pcm = np.frombuffer(chunk, dtype="<i2").astype(np.int16)
        elif self.encoding == "mulaw":
            pcm = ulaw_decode(chunk)
        else:
            pcm = alaw_decode(chunk)
        return pcm.reshape(-1, self.channels)


def split_tracks(frames: np.ndarray, multichannel: bool) -> list[np.ndarray]:
    """One int16 array per participant: each channel, or (without multichannel) the channels mixed."""
    if not multichannel and frames.shape[1] > 1:
        return [frames.astype(np.int32).mean(axis=1).astype(np.int16)]
    return [np.ascontiguousarray(frames[:, c]) for c in range(frames.shape[1])]


#: What the decoding thread hands over: PCM frames, an error message, or None at the end.
Decoded = Union[np.ndarray, str, None]


class ContainerStream:
    """A container decoded as it arrives. `write` the socket's bytes, `finish` at the end; `out`
    yields (samples, tracks) int16 arrays at MODEL_RATE (one track: the channels mixed by ffmpeg;
    multichannel: the container's channels, which must be `channels`), then an error message or
    None when the stream is over."""

    rate = MODEL_RATE

    def __init__(self, opts: ListenOptions) -> None:
        self.tracks = opts.tracks
        self.multichannel = opts.multichannel
        self.out: asyncio.Queue[Decoded] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._pipe = PushedBytes()  # bounded: a sender far ahead of the decoder is told so
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="listen-container", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> bool:
        """False when the decoder is too far behind (the sender is much faster than real time)."""
        return self._finished or self._pipe.write(data)

    def finish(self) -> None:
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
            with av.open(self._pipe, mode="r", metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise ValueError("no audio stream in the container")
                stream = container.streams.audio[0]
                channels = stream.codec_context.channels or 1
                if self.multichannel and channels != self.tracks:
                    raise ValueError(f"the audio has {channels} channel(s), the request said {self.tracks}")
                layout = "mono" if self.tracks == 1 else ("stereo" if self.tracks == 2 else self.tracks)
                resampler = av.AudioResampler(format="s16", layout=layout, rate=self.rate)
                for frame in container.decode(stream):
                    frame.pts = None
                    for out in resampler.resample(frame):
                        self._emit(out.to_ndarray().reshape(-1, self.tracks))
                for out in resampler.resample(None):
                    self._emit(out.to_ndarray().reshape(-1, self.tracks))
            self._emit(None)
        except Exception as exc:  # PyAV's errors, or ours above: the socket closes with DATA-0000
            log.info("listen container stream failed: %s", exc)
            self._emit(f"the audio cannot be decoded ({type(exc).__name__}: {str(exc)[:60]})")
        finally:
            self._finished = True
            self._pipe.close()  # nothing reads what is left
