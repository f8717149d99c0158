"""`callscribe transcribe FILE`: a file through the same leg pipeline and scheduler as live calls.

The file is decoded to 16 kHz (PyAV/ffmpeg), each speaker (the mixed-down audio, or with
`--channels split` each channel) becomes one leg, and the legs are fed as fast as the model keeps
up, not in real time. Output on stdout, one utterance per line in time order:

    [00:01.20 - 00:03.40] text                    (mixed channels)
    [00:01.20 - 00:03.40] channel 0: text         (--channels split)

with `--words`, each line is followed by its words (`    00:01.20-00:01.52  word  (0.97)`).
`--json` prints {"utterances": [{"speaker", "start_ms", "end_ms", "text", "words"?}]}, with
"words" ([{"text", "start_ms", "end_ms", "confidence"}]) only when --words is given.
Exit codes: 0 done, 1 the file cannot be read, 2 the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import numpy as np

from callscribe.asr.types import TranscriptEvent
from callscribe.audio.codecs import float32_to_int16
from callscribe.audio.fileio import SAMPLE_RATE, AudioReadError, load_audio

CHUNK = SAMPLE_RATE // 2  # samples fed per step (0.5 s)


def format_time(ms: int) -> str:
    s, cs = divmod(max(0, ms) // 10, 100)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}.{cs:02d}" if h else f"{m:02d}:{s:02d}.{cs:02d}"


def run_transcribe(args: argparse.Namespace) -> int:
    split = getattr(args, "channels", "mix") == "split"
    try:
        tracks = load_audio(args.file, split_channels=split)
    except AudioReadError as exc:
        print(f"callscribe: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    from callscribe.asr.engine import ModelNotFound, SpeechEngine
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.config import load_settings

    settings = load_settings(**({"model": args.model} if getattr(args, "model", None) else {}))
    try:
        engine = SpeechEngine.from_settings(settings)
    except (ModelNotFound, RuntimeError, ValueError) as exc:
        print(f"callscribe: cannot load model: {exc}", file=sys.stderr)
        return 2
    scheduler = AsrScheduler.from_settings(engine, settings)
    scheduler.start()
    try:
        names = [f"channel {i}" for i in range(len(tracks))] if split else ["mix"]
        utterances = _run(scheduler, tracks, names, progress=not getattr(args, "no_progress", False))
    finally:
        scheduler.stop()
    try:
        _print(utterances, words=getattr(args, "words", False), as_json=getattr(args, "json", False), split=split)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
    return 0


def _run(scheduler: Any, tracks: list[np.ndarray], names: list[str], *, progress: bool) -> list[dict]:
    lock = threading.Lock()
    results: list[dict] = []

    def collector(name: str):
        def on_event(event: TranscriptEvent) -> None:
            if event.kind == "final" and event.text:
                with lock:
                    results.append(_utterance(name, event))
        return on_event

    # Keep a few batches queued so the workers stay busy without buffering the whole file: each leg's
    # input is paced once this many of its finals wait, and feed blocks while its input queue is full.
    backlog = 2 * scheduler.batch_size * scheduler.workers
    legs = [scheduler.open_leg(collector(n), partials=False, max_queued_finals=backlog) for n in names]
    total = max(len(t) for t in tracks)
    bar = _progress_bar(total / SAMPLE_RATE, enabled=progress)
    for pos in range(0, total, CHUNK):
        for leg, track in zip(legs, tracks):
            piece = track[pos:pos + CHUNK]
            if piece.size:
                leg.feed(float32_to_int16(piece), SAMPLE_RATE, block=True)
        if bar is not None:
            bar.update(max(0.0, min(min(CHUNK, total - pos) / SAMPLE_RATE, bar.total - bar.n)))
    for future in [leg.close() for leg in legs]:
        future.result()
    if bar is not None:
        bar.close()
    return sorted(results, key=lambda u: (u["start_ms"], u["speaker"]))


def _progress_bar(seconds: float, *, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    import os

    from tqdm import tqdm

    try:
        width, height = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        width = height = 0
    # Some terminals report 0 x 0; tqdm would then draw nothing.
    return tqdm(total=round(seconds, 2), unit="s", unit_scale=False, file=sys.stderr, desc="transcribing",
                ncols=width if width >= 40 else 80, nrows=height if height > 0 else 24,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")


def _utterance(speaker: str, event: TranscriptEvent) -> dict:
    return {
        "speaker": speaker, "start_ms": event.start_ms, "end_ms": event.end_ms, "text": event.text,
        "words": [{"text": w.text, "start_ms": w.start_ms, "end_ms": w.end_ms, "confidence": w.confidence}
                  for w in event.words],
    }


def _print(utterances: list[dict], *, words: bool, as_json: bool, split: bool) -> None:
    out = sys.stdout
    if as_json:
        if not words:
            utterances = [{k: v for k, v in u.items() if k != "words"} for u in utterances]
        json.dump({"utterances": utterances}, out, ensure_ascii=False, indent=2)
        out.write("\n")
        return
    for u in utterances:
        who = f"{u['speaker']}: " if split else ""
        out.write(f"[{format_time(u['start_ms'])} - {format_time(u['end_ms'])}] {who}{u['text']}\n")
        if words:
            for w in u["words"]:
                out.write(f"    {format_time(w['start_ms'])}-{format_time(w['end_ms'])}  {w['text']}  ({w['confidence']:.2f})\n")
    out.flush()
