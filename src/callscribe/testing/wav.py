"""Minimal WAV reading and writing for PCM files (tests and benchmarks)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the sample rate of a 16-bit PCM WAV (the first channel if several)."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    audio = np.frombuffer(data, dtype="<i2")
    return audio.reshape(-1, channels)[:, 0].astype(np.int16), rate


def write_wav(path: str | Path, audio: np.ndarray, rate: int) -> None:
    """Write int16 samples; a 2-D array (samples, channels) writes several channels."""
    audio = np.asarray(audio, dtype="<i2")
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.tobytes())
