"""Streaming soxr resampling: frame by frame equals whole-buffer, and it is band-limited."""

from __future__ import annotations

import numpy as np

from callscribe.audio.resample import StreamResampler, resample


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant(audio: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spec)])


def test_20ms_frames_give_the_same_signal_as_one_buffer():
    pcm = tone(440, 8000, 2.0)
    rs = StreamResampler(8000)
    out = np.concatenate([rs.process(pcm[i:i + 160]) for i in range(0, len(pcm), 160)] + [rs.flush()])
    whole = resample(pcm, 8000)
    assert abs(len(out) - 32000) <= 2 and abs(len(whole) - 32000) <= 2
    n = min(len(out), len(whole))
    assert np.max(np.abs(out[200:n - 200] - whole[200:n - 200])) < 1e-3
    assert out.dtype == np.float32
    assert abs(dominant(out, 16000) - 440) < 3


def test_downsampling_removes_what_16k_cannot_carry():
    pcm = tone(11000, 48000) // 2 + tone(1000, 48000) // 2  # 11 kHz would alias to 5 kHz
    rs = StreamResampler(48000)
    out = np.concatenate([rs.process(pcm[i:i + 960]) for i in range(0, len(pcm), 960)])
    spec = np.abs(np.fft.rfft(out[1000:]))
    freqs = np.fft.rfftfreq(len(out) - 1000, 1 / 16000)
    assert abs(dominant(out[1000:], 16000) - 1000) < 3
    alias = spec[(freqs > 4900) & (freqs < 5100)].max()
    assert alias < spec.max() * 1e-3


def test_16k_passes_through():
    pcm = tone(300, 16000, 0.1)
    assert np.allclose(StreamResampler(16000).process(pcm), pcm / 32768.0)
