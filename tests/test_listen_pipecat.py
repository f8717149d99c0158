"""pipecat's Deepgram STT service against callscribe: `callscribe serve` started here, and a minimal
pipecat pipeline (tests/pipecat_client.py) fed a synthesised WAV, run as a client process under the
interpreter of its own venv, printing the transcription frames that reach its end.

pipecat has its own venv because `pipecat-ai[deepgram]` would downgrade packages (soxr, protobuf)
in the main environment. scripts/test.sh creates it (`.venv-pipecat`, kept between runs), so CI runs
this test; locally it is skipped, naming that command, until the venv exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from callscribe.testing.speech import say, silence
from callscribe.testing.wav import write_wav
from servers import HANG_GUARD_S
from test_serve import free_port, serve_env, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLIENT = Path(__file__).resolve().parent / "pipecat_client.py"
TEXT = "Hello, I would like to book a table for two people tomorrow evening."
KEY = "ka:sa"


def pipecat_python() -> Path:
    """The pipecat venv's interpreter: CALLSCRIBE_PIPECAT_PYTHON, else .venv-pipecat of the checkout."""
    given = os.environ.get("CALLSCRIBE_PIPECAT_PYTHON")
    return Path(given) if given else ROOT / ".venv-pipecat" / "bin" / "python"


@pytest.fixture(scope="module")
def python() -> Path:
    path = pipecat_python()
    if not path.exists():
        make = (f"python3 -m venv {ROOT / '.venv-pipecat'} && "
                f"{ROOT / '.venv-pipecat' / 'bin' / 'pip'} install 'pipecat-ai[deepgram]==1.14.0'")
        if os.environ.get("CI"):
            pytest.fail(f"no pipecat venv at {path}: scripts/test.sh should have made it ({make})")
        pytest.skip(f"no pipecat venv at {path}; create it with: {make} (scripts/test.sh does)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`callscribe serve` as its own process, as a voice bot would find it."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "callscribe", "serve", "--port", str(port)],
                            env=serve_env(tmp, CALLSCRIBE_API_KEYS=f"{KEY}:acme"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", 200, proc)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_pipecat_deepgram_stt_transcribes_a_wav(python, server, tmp_path):
    path = tmp_path / "booking.wav"
    write_wav(path, np.concatenate([silence(0.5), say(TEXT), silence(1.5)]), 16000)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(python), str(CLIENT), server, KEY, str(path), "--until", "evening",
                          "--timeout", "60"],
                         capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr[-3000:]
    frames = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    heard = " ".join(f["text"] for f in frames if f["type"] == "final").lower()
    assert "table" in heard and "tomorrow" in heard, (heard, run.stderr[-2000:])
    assert any(f["type"] == "interim" for f in frames), "no interim transcriptions"
