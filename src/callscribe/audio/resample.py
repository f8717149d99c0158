"""Streaming resampling of int16 frames to 16 kHz float32 (the model's rate), with soxr.

soxr is band-limited (a proper anti-alias filter), which matters for 8 kHz telephony upsampling and
for 44.1/48 kHz sources. One `StreamResampler` per leg keeps the filter state between frames, so
20 ms frames resample exactly as the whole stream would.
"""

from __future__ import annotations

import numpy as np
import soxr

from callscribe.audio.rates import MODEL_RATE as TARGET_RATE


class StreamResampler:
    """int16 (or float32) mono frames at `rate_in` -> float32 at `rate_out` (default 16 kHz)."""

    def __init__(self, rate_in: int, rate_out: int = TARGET_RATE, quality: str = "HQ") -> None:
        if rate_in <= 0:
            raise ValueError(f"bad sample rate {rate_in}")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._stream = None if rate_in == rate_out else soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality=quality)

    def process(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample one frame. `last=True` flushes the filter's tail (end of stream)."""
        audio = to_float32(pcm)
        if self._stream is None:
            return audio
        return self._stream.resample_chunk(audio, last=last)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def to_float32(pcm: np.ndarray) -> np.ndarray:
    """int16 -> float32 in [-1, 1); float input is passed through as float32."""
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        return pcm.astype(np.float32) * (1.0 / 32768.0)
    return pcm.astype(np.float32, copy=False)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = TARGET_RATE) -> np.ndarray:
    """Whole-buffer resampling to float32 (for files)."""
    audio = to_float32(audio)
    if rate_in == rate_out:
        return audio
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)
