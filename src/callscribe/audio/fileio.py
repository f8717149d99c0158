"""Decoding audio files (anything ffmpeg/PyAV reads) to 16 kHz float32, mixed or per channel."""

from __future__ import annotations

import os

import numpy as np

from callscribe.audio.rates import MODEL_RATE as SAMPLE_RATE


class AudioReadError(Exception):
    """The file is missing, unreadable or holds no decodable audio; the message is one short line."""


def load_audio(path: str | os.PathLike, *, split_channels: bool = False) -> list[np.ndarray]:
    """Decode `path` to 16 kHz float32.

    Returns one array (channels mixed down) or, with `split_channels`, one array per channel
    (a mono file gives one). Raises AudioReadError with a short reason.
    """
    import av

    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioReadError("no such file")
    if os.path.isdir(path):
        raise AudioReadError("is a directory")
    if not os.access(path, os.R_OK):
        raise AudioReadError("permission denied")
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioReadError("no audio stream in the file")
            stream = container.streams.audio[0]
            channels = stream.codec_context.channels or 1
        _check_wav_length(path)
        nch = channels if split_channels else 1
        out = _decode(path, nch)
    except AudioReadError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise AudioReadError(_reason(exc)) from None
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise AudioReadError("no audio could be decoded")
    return [np.ascontiguousarray(out[c]) for c in range(out.shape[0])]


def _decode(path: str, channels: int) -> np.ndarray:
    """(channels, samples) float32 at 16 kHz, resampled by ffmpeg's resampler (swr)."""
    import av

    layout = "mono" if channels == 1 else ("stereo" if channels == 2 else None)
    resampler = av.AudioResampler(format="s16p", layout=layout or channels, rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        frames = container.decode(stream)
        try:
            for frame in frames:
                frame.pts = None
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
        except av.error.InvalidDataError:
            done = sum(c.shape[1] for c in chunks) / SAMPLE_RATE
            raise AudioReadError(f"damaged or truncated audio (decoding failed after {done:.1f} s)") from None
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32)
    data = np.concatenate(chunks, axis=1).astype(np.float32) / 32768.0
    return data.reshape(channels, -1)


def _check_wav_length(path: str) -> None:
    """A WAV whose data chunk is shorter than its header says was cut off (ffmpeg would decode
    the part that is there without a word)."""
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        offset, byte_rate = 12, 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise AudioReadError("truncated WAV file (no data chunk)")
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = fh.read(min(length, 16))
                if len(fmt) >= 12:
                    byte_rate = struct.unpack("<I", fmt[8:12])[0]
                fh.seek(offset + 8 + length + (length & 1))
            elif cid == b"data":
                have = size - offset - 8
                if length not in (0, 0xFFFFFFFF) and have < length:
                    said = f" ({length / byte_rate:.1f} s declared, {have / byte_rate:.1f} s present)" if byte_rate else ""
                    raise AudioReadError(f"truncated WAV file{said}")
                return
            else:
                fh.seek(offset + 8 + length + (length & 1))
            offset += 8 + length + (length & 1)


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    # PyAV messages look like "[Errno 1094995529] Invalid data found when processing input: 'x.txt'"
    if "] " in text:
        text = text.split("] ", 1)[1]
    text = text.split(": '", 1)[0]
    if "Invalid data found" in text:
        return "not an audio file (invalid data found when processing input)"
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
