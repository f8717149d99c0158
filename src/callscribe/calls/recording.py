"""Recording of one leg's audio over one streaming interval, to a 16-bit mono WAV file.

Only audio that arrives while transcription is on reaches a recorder, so nothing said during a stop
is ever written. Files live under `data_dir/recordings/<tenant>/<call_id>/<role>-<stream_id>.wav`.
"""

from __future__ import annotations

import logging
import re
import wave
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:80] or "_"


class LegRecorder:
    """Appends PCM to a WAV file; the first frame fixes the sample rate (later frames are resampled)."""

    def __init__(self, data_dir: Path, tenant: str, call_id: str, role: str, stream_id: str):
        self.data_dir = Path(data_dir)
        self.relative_path = Path("recordings") / _safe(tenant) / _safe(call_id) / f"{_safe(role)}-{_safe(stream_id)}.wav"
        self._wav: wave.Wave_write | None = None
        self.sample_rate: int | None = None
        self.samples = 0
        self.failed = False

    @property
    def path(self) -> Path:
        return self.data_dir / self.relative_path

    def write(self, pcm: np.ndarray, rate: int) -> None:
        if self.failed or len(pcm) == 0:
            return
        try:
            if self._wav is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._wav = wave.open(str(self.path), "wb")
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(rate)
                self.sample_rate = rate
            if rate != self.sample_rate:
                import soxr

                pcm = np.clip(soxr.resample(pcm.astype(np.float32), rate, self.sample_rate), -32768, 32767)
            data = np.asarray(pcm, dtype="<i2")
            self._wav.writeframesraw(data.tobytes())
            self.samples += len(data)
        except OSError:
            # A full disk must not stop transcription; the recording is reported as not saved.
            log.exception("recording %s failed", self.relative_path)
            self.failed = True

    def close(self) -> bool:
        """Finish the file; True when a recording with audio was saved."""
        if self._wav is None:
            return False
        try:
            self._wav.close()
        except OSError:
            log.exception("closing recording %s failed", self.relative_path)
            self.failed = True
        self._wav = None
        return not self.failed and self.samples > 0

    @property
    def duration_ms(self) -> int:
        return int(self.samples * 1000 // self.sample_rate) if self.sample_rate else 0
