"""Recording of one leg's audio over one streaming interval, to a 16-bit mono WAV file.

Only audio that arrives while transcription is on reaches a recorder, so nothing said during a stop
is ever written. Files live under `data_dir/recordings/<tenant>/<call_id>/<role>-<stream_id>.wav`,
owner-only (0600, directories 0700): they hold what callers said.

A recording stops cleanly at `max_seconds` (CALLSCRIBE_MAX_RECORDING_S), or when the WAV format's
4 GiB limit would be passed, whichever is first: the file is finished and kept, `end_reason` says
why, and transcription goes on. A write that fails (disk full) ends it as failed.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DEFAULT_MAX_S = 4 * 3600
_RIFF_MAX_SAMPLES = (0xFFFFFFFF - 36) // 2  # 16-bit samples whose sizes fit the RIFF header's 32 bits


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:80] or "_"


class LegRecorder:
    """Appends PCM to a WAV file; the first frame fixes the sample rate (later frames are resampled)."""

    def __init__(self, data_dir: Path, tenant: str, call_id: str, role: str, stream_id: str,
                 max_seconds: float = DEFAULT_MAX_S):
        self.data_dir = Path(data_dir)
        self.relative_path = Path("recordings") / _safe(tenant) / _safe(call_id) / f"{_safe(role)}-{_safe(stream_id)}.wav"
        self.max_seconds = max_seconds
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        self.sample_rate: int | None = None
        self.samples = 0
        self.failed = False
        self.end_reason: str | None = None  # "max-duration" or "failed" once the recording stopped early

    @property
    def path(self) -> Path:
        return self.data_dir / self.relative_path

    def _open(self, rate: int) -> wave.Wave_write:
        for directory in reversed([self.path.parent, *self.path.parent.parents][:3]):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        wav = wave.open(self._file, "wb")
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        self.sample_rate = rate
        return wav

    def write(self, pcm: np.ndarray, rate: int) -> None:
        if self.failed or self.end_reason is not None or len(pcm) == 0:
            return
        try:
            if self._wav is None:
                self._wav = self._open(rate)
            if rate != self.sample_rate:
                import soxr

                pcm = np.clip(soxr.resample(pcm.astype(np.float32), rate, self.sample_rate), -32768, 32767)
            data = np.asarray(pcm, dtype="<i2")
            room = min(int(self.max_seconds * (self.sample_rate or rate)), _RIFF_MAX_SAMPLES) - self.samples
            full = len(data) >= room
            data = data[:max(room, 0)]
            self._wav.writeframesraw(data.tobytes())
            self.samples += len(data)
            if full:
                log.warning("recording %s stopped at its maximum length (%d s, CALLSCRIBE_MAX_RECORDING_S); "
                            "transcription goes on", self.relative_path, self.duration_ms // 1000)
                self.end_reason = "max-duration"
                self._finish()
        except (OSError, struct.error, wave.Error):
            # A full disk must not stop transcription; the recording is reported as not saved.
            log.exception("recording %s failed", self.relative_path)
            self.failed = True
            self.end_reason = "failed"

    def _finish(self) -> None:
        """Write the final header and close the file (once)."""
        wav, fh, self._wav, self._file = self._wav, self._file, None, None
        try:
            try:
                if wav is not None:
                    wav.close()
            finally:
                if fh is not None:
                    fh.close()
        except (OSError, struct.error, wave.Error):
            log.exception("closing recording %s failed", self.relative_path)
            self.failed = True

    def close(self) -> bool:
        """Finish the file; True when a recording with audio was saved."""
        self._finish()
        return not self.failed and self.samples > 0

    @property
    def duration_ms(self) -> int:
        return int(self.samples * 1000 // self.sample_rate) if self.sample_rate else 0
