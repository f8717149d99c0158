"""`callscribe transcribe` as a user runs it: a subprocess on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from callscribe.asr.wer import wer
from callscribe.testing.wav import write_wav

HANG_GUARD_S = 300

AGENT = "Good morning, this is the billing department. Who am I speaking with?"
CUSTOMER = "Good morning, I have a question about my last bill."


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "callscribe", "transcribe", *args], capture_output=True,
                          text=True, timeout=HANG_GUARD_S, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory, speech) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("transcribe")
    call = speech.build_call([("agent", AGENT), ("customer", CUSTOMER)])
    stereo = np.stack([call.tracks["agent"], call.tracks["customer"]], axis=1)
    out = {"stereo": d / "call.wav", "mono": d / "mono.wav"}
    write_wav(out["stereo"], stereo, 16000)
    write_wav(out["mono"], call.tracks["agent"] + call.tracks["customer"], 16000)
    for ext in ("mp3", "ogg"):
        out[ext] = d / f"call.{ext}"
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(out["stereo"]), str(out[ext])], check=True)
    out["text"] = d / "notes.wav"
    out["text"].write_text("this is not audio\n" * 50)
    out["truncated"] = d / "truncated.wav"
    out["truncated"].write_bytes(out["mono"].read_bytes()[:4000])
    out["missing"] = d / "nothing-here.wav"
    return out


def test_mono_wav_prints_the_words(files):
    proc = run(str(files["mono"]), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("[00:0") for line in lines)
    assert wer(f"{AGENT} {CUSTOMER}", " ".join(line.split("] ", 1)[1] for line in lines)) <= 0.15


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_compressed_files_in_json_with_words(files, fmt):
    proc = run(str(files[fmt]), "--json", "--words", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    utterances = json.loads(proc.stdout)["utterances"]
    assert [u["speaker"] for u in utterances] == ["mix", "mix"]
    assert wer(f"{AGENT} {CUSTOMER}", " ".join(u["text"] for u in utterances)) <= 0.15
    words = utterances[0]["words"]
    assert words and {"text", "start_ms", "end_ms", "confidence"} <= set(words[0])
    assert utterances[0]["start_ms"] <= words[0]["start_ms"] <= words[-1]["end_ms"] <= utterances[0]["end_ms"] + 20
    assert utterances[0]["end_ms"] < utterances[1]["start_ms"]


def test_stereo_split_gives_one_speaker_per_channel(files):
    proc = run(str(files["stereo"]), "--channels", "split", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("] ", 1)[1].split(":", 1)[0] for line in lines] == ["channel 0", "channel 1"]
    assert wer(AGENT, lines[0].split(": ", 1)[1]) <= 0.15 and wer(CUSTOMER, lines[1].split(": ", 1)[1]) <= 0.15
    plain = run(str(files["stereo"]), "--json", "--no-progress")  # mixed by default, no words
    assert "words" not in json.loads(plain.stdout)["utterances"][0]


@pytest.mark.parametrize("which,reason", [("text", "not an audio file"), ("truncated", "truncated"),
                                          ("missing", "no such file")])
def test_unreadable_input_is_one_error_line(files, which, reason):
    proc = run(str(files[which]))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"callscribe: cannot read {files[which]}: ") and reason in lines[0]


def test_recorded_samples_of_pytest_audioeval(tmp_path, capsys):
    import argparse
    import importlib.util

    from callscribe.transcribe import run_transcribe

    spec = importlib.util.find_spec("pytest_audioeval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pytest-audioeval is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "samples" / "audio" / "en"
    samples = sorted(folder.glob("*.wav"))
    assert len(samples) >= 3
    refs, hyps = [], []
    for wav in samples:
        args = argparse.Namespace(file=str(wav), words=False, json=True, channels="mix", model=None, no_progress=True)
        assert run_transcribe(args) == 0
        hyps.append(" ".join(u["text"] for u in json.loads(capsys.readouterr().out)["utterances"]))
        refs.append(wav.with_suffix(".txt").read_text().strip())
    assert wer(refs, hyps) <= 0.1, list(zip(refs, hyps))


def test_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "callscribe", "transcribe", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    for opt in ("--words", "--json", "--channels", "--model", "--no-progress"):
        assert opt in out
