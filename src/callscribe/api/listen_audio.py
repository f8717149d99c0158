"""The audio of a listen request: raw frames (linear16, mulaw, alaw, interleaved by channel) decoded
in place; a container (WAV, Ogg/Opus, WebM, MP3, FLAC, as a browser's MediaRecorder sends it) is
decoded as it arrives by `audio.pcm_stream.PushedContainer`.
"""

from __future__ import annotations

import logging

import numpy as np

from callscribe.audio.codecs import alaw_decode, ulaw_decode
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
