"""Engine capacity benchmark: N legs fed in real time until finals fall behind.

    python bench/engine.py [--max-legs N] [--step S] [--duration SEC] [--telephony|--wideband] [--json FILE]
    callscribe bench engine ...

Each leg is one role of a synthesised two-party call (testing.speech.build_call on CALL_SCRIPTS),
started at a different turn so utterances do not line up, fed in 20 ms frames paced by the clock
(8 kHz mu-law by default, as telephony delivers it), with staggered starts. One feeder thread feeds
every leg, as an event loop would. Per N it prints: end of speech -> final p50/p95 (end of speech
is the known turn end, measured against the wall clock when the final arrived), first partial after
speech start p50, CPU seconds per audio second, RSS, extra RSS per leg, and WER of the streamed
finals against the reference text and against the same model transcribing the same audio offline.
Engine settings come from CALLSCRIBE_* variables (CALLSCRIBE_ASR_BATCH_SIZE, ...).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

TARGET_P95 = 1.5
FRAME_S = 0.02
DEFAULT_LADDER = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96]


@dataclass
class LegAudio:
    key: tuple
    pcm8k: np.ndarray  # int16 after mu-law (what the leg is fed, at `rate`)
    rate: int
    audio16k: np.ndarray  # float32, what the model sees offline
    turns: list[tuple[float, float, str]]  # (start_s, end_s, text) in the leg's own timeline


@dataclass
class Leg:
    audio: LegAudio
    start_wall: float
    pipeline: object = None
    fed: int = 0
    events: list = field(default_factory=list)  # (arrival wall time, TranscriptEvent)


def warm_speech_cache() -> None:
    """Synthesise the calls in a child process, so this process never loads the TTS model and the
    RSS figures are the engine's own."""
    code = ("from callscribe.testing import speech\n"
            "for s in speech.CALL_SCRIPTS: speech.build_call(s)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def make_leg_audio(duration_s: float, telephony: bool) -> list[LegAudio]:
    """Every (script, role, starting turn) variant, each `duration_s` long (the call loops)."""
    from callscribe.audio import codecs
    from callscribe.audio.resample import resample
    from callscribe.testing import speech

    out = []
    for si, script in enumerate(speech.CALL_SCRIPTS):
        call = speech.build_call(script)
        n_total = len(next(iter(call.tracks.values())))
        for k, turn in enumerate(call.turns):
            offset = max(0, int((turn.start_s - 0.5) * 16000))
            for role in ("agent", "customer"):
                track = call.tracks[role]
                reps = int(np.ceil((duration_s * 16000 + offset) / n_total)) + 1
                looped = np.tile(track, reps)[offset: offset + int(duration_s * 16000)]
                turns = []
                for r in range(reps):
                    for t in call.turns:
                        if t.role != role:
                            continue
                        s, e = t.start_s + r * n_total / 16000 - offset / 16000, t.end_s + r * n_total / 16000 - offset / 16000
                        if s >= 0 and e <= duration_s:
                            turns.append((s, e, t.text))
                if telephony:
                    fed, rate = codecs.ulaw_decode(speech.telephony(looped)), 8000
                else:
                    fed, rate = looped, 16000
                out.append(LegAudio((si, k, role, duration_s, telephony), fed, rate, resample(fed, rate), turns))
    return out


def serving_rss() -> float:
    """RSS of a fresh process holding just the loaded engine and a started scheduler, after one decode."""
    code = ("import numpy as np, psutil\n"
            "from callscribe.config import load_settings\n"
            "from callscribe.asr.engine import SpeechEngine\n"
            "from callscribe.asr.scheduler import AsrScheduler\n"
            "s = load_settings(); e = SpeechEngine.from_settings(s); AsrScheduler.from_settings(e, s).start()\n"
            "noise = np.random.default_rng(0).normal(0, 0.05, 5 * 16000).astype(np.float32)\n"
            "e.decode_batch([noise] * s.asr_batch_size)\n"
            "print(psutil.Process().memory_info().rss / 2**20)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_step(scheduler, pool: list[LegAudio], n: int, stagger_s: float) -> tuple[list[Leg], dict]:
    start = time.monotonic() + 0.2
    # Legs beyond the pool replay a variant: start them 4.1 s later per round so their utterances
    # do not end together with the original's (that would flatter batching).
    legs = [Leg(pool[i % len(pool)], start + i * stagger_s / max(1, n) + (i // len(pool)) * 4.1) for i in range(n)]
    for leg in legs:
        leg.pipeline = scheduler.open_leg(lambda ev, leg=leg: leg.events.append((time.monotonic(), ev)))
    cpu0, peak = time.process_time(), rss_mb()
    done = 0
    next_rss = time.monotonic()
    while done < n:
        now = time.monotonic()
        done = 0
        for leg in legs:
            step = int(leg.audio.rate * FRAME_S)
            due = min(len(leg.audio.pcm8k), int((now - leg.start_wall) / FRAME_S) * step)
            while leg.fed < due:  # catch up if the feeder was late, 20 ms at a time
                leg.pipeline.feed(leg.audio.pcm8k[leg.fed: leg.fed + step], leg.audio.rate)
                leg.fed += step
            if leg.fed >= len(leg.audio.pcm8k):
                done += 1
        if now >= next_rss:
            peak, next_rss = max(peak, rss_mb()), now + 1.0
        time.sleep(max(0.0, FRAME_S - (time.monotonic() - now)))
    for f in [leg.pipeline.close() for leg in legs]:
        f.result(300)
    cpu = time.process_time() - cpu0
    audio_s = sum(len(leg.audio.pcm8k) / leg.audio.rate for leg in legs)
    return legs, {"cpu_per_audio_s": cpu / audio_s, "rss_mb": max(peak, rss_mb()), "audio_s": audio_s}


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def analyse(legs: list[Leg], offline: dict) -> dict:
    from callscribe.asr.wer import wer

    final_lat, first_partial, first_any = [], [], []
    measured_turns = 0
    refs, hyps, off_hyps = [], [], []
    for leg in legs:
        finals = [(t, e) for t, e in leg.events if e.kind == "final" and e.text]
        partials = [(t, e) for t, e in leg.events if e.kind == "partial"]
        turns = leg.audio.turns
        fed_s = len(leg.audio.pcm8k) / leg.audio.rate

        def turn_of(e) -> int | None:
            best, who = 0.0, None
            for i, (s, t_end, _) in enumerate(turns):
                o = overlap(e.start_ms / 1000, e.end_ms / 1000, s, t_end)
                if o > best:
                    best, who = o, i
            return who

        by_turn: dict[int, list] = {}
        for t, e in finals:
            i = turn_of(e)
            if i is not None:
                by_turn.setdefault(i, []).append((t, e))
        for i, (s, t_end, text) in enumerate(turns):
            if t_end > fed_s - 0.8:
                continue  # the endpoint of the last turn comes from close(), not from silence
            got = by_turn.get(i, [])
            measured_turns += 1
            if got:
                final_lat.append(max(t for t, _ in got) - (leg.start_wall + t_end))
            ps = [t for t, e in partials if turn_of(e) == i]
            if ps:
                first_partial.append(min(ps) - (leg.start_wall + s))
            anyev = ps + [t for t, _ in got]
            if anyev:
                first_any.append(min(anyev) - (leg.start_wall + s))
        # WER per leg over its complete turns (the cut-off turn at the end is left out of all three).
        full = [i for i, (_, t_end, _) in enumerate(turns) if t_end <= fed_s]
        refs.append(" ".join(turns[i][2] for i in full))
        hyps.append(" ".join(e.text for t, e in finals if turn_of(e) in full))
        off_hyps.append(offline[leg.audio.key])

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    return {
        "finals": len(final_lat),
        "final_p50_s": pct(final_lat, 50), "final_p95_s": pct(final_lat, 95), "final_max_s": pct(final_lat, 100),
        "first_partial_p50_s": pct(first_partial, 50),
        "turns_with_partial": len(first_partial) / max(1, measured_turns),
        "first_result_p50_s": pct(first_any, 50),
        "wer_stream_ref": wer(refs, hyps), "wer_offline_ref": wer(refs, off_hyps),
        "wer_stream_vs_offline": wer(off_hyps, hyps),
    }


def fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/engine.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--max-legs", type=int, default=96)
    p.add_argument("--step", type=int, default=0, help="legs added per step (default: 1, 2, 4, 8, 12, 16, ...)")
    p.add_argument("--start", type=int, default=1, help="legs in the first step")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of audio per leg per step")
    p.add_argument("--telephony", dest="telephony", action="store_true", default=True,
                   help="feed 8 kHz mu-law, as telephony does (the default)")
    p.add_argument("--wideband", dest="telephony", action="store_false", help="feed 16 kHz PCM instead")
    p.add_argument("--stagger", type=float, default=3.0, help="spread leg starts over this many seconds")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first step over the target")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    from callscribe.asr.engine import SpeechEngine
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.config import load_settings

    print("synthesising calls (cached on disk) ...", file=sys.stderr)
    warm_speech_cache()
    pool = make_leg_audio(args.duration, args.telephony)
    server_rss = serving_rss()
    settings = load_settings()
    engine = SpeechEngine.from_settings(settings)
    scheduler = AsrScheduler.from_settings(engine, settings)
    scheduler.start()

    print("offline reference transcripts ...", file=sys.stderr)
    ladder = list(range(args.start, args.max_legs + 1, args.step)) if args.step else \
        [n for n in DEFAULT_LADDER if args.start <= n <= args.max_legs]
    offline: dict = {}
    need = {pool[i % len(pool)].key: pool[i % len(pool)] for i in range(max(ladder))}
    for key, la in need.items():
        end = int(min(len(la.audio16k), (la.turns[-1][1] + 0.4) * 16000)) if la.turns else 0
        offline[key] = " ".join(seg.text for seg in engine.transcribe_offline(la.audio16k[:end])) if end else ""
    for _ in range(2):  # warm the batched path at full batch size, then drop what only the bench needs
        engine.decode_batch([la.audio16k[16000 * k: 16000 * (k + 8)] for k, la in enumerate(pool[:settings.asr_batch_size])])
    for la in pool:
        la.audio16k = np.zeros(0, np.float32)
    gc.collect()
    idle_rss = rss_mb()

    load = os.getloadavg()
    header = (f"engine: {engine.description}; batch {settings.asr_batch_size}, wait {settings.asr_batch_wait_ms} ms, "
              f"endpoint {settings.endpoint_silence_ms} ms, partials every {settings.partial_interval_ms} ms; "
              f"{'8 kHz mu-law' if args.telephony else '16 kHz'}; {args.duration:.0f} s per leg; "
              f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start\n"
              f"RSS: a process with just the engine loaded and warm {server_rss:.0f} MB; "
              f"this bench process idle with the model {idle_rss:.0f} MB (MB/leg is measured from this)")
    print(header)
    cols = ("legs", "final p50", "final p95", "final max", "1st partial p50", "partial cover", "CPU s/audio s",
            "RSS MB", "MB/leg", "WER ref", "WER offline-ref", "WER vs offline", "load")
    print(" | ".join(cols))
    rows, best = [], 0
    for n in ladder:
        legs, meas = run_step(scheduler, pool, n, args.stagger)
        res = {"legs": n, **meas, **analyse(legs, offline), "loadavg_1m": os.getloadavg()[0],
               "partials_dropped": scheduler.stats().get("partials_dropped", 0)}
        res["rss_per_leg_mb"] = (res["rss_mb"] - idle_rss) / n
        rows.append(res)
        print(" | ".join([f"{n:4d}", fmt(res["final_p50_s"]), fmt(res["final_p95_s"]), fmt(res["final_max_s"]),
                          fmt(res["first_partial_p50_s"]), fmt(res["turns_with_partial"], ".0%"),
                          fmt(res["cpu_per_audio_s"], ".3f"), fmt(res["rss_mb"], ".0f"), fmt(res["rss_per_leg_mb"], ".1f"),
                          fmt(res["wer_stream_ref"], ".3f"), fmt(res["wer_offline_ref"], ".3f"),
                          fmt(res["wer_stream_vs_offline"], ".3f"), fmt(res["loadavg_1m"], ".1f")]), flush=True)
        ok = res["final_p95_s"] is not None and res["final_p95_s"] <= TARGET_P95
        if ok:
            best = n
        elif not args.keep_going:
            break
        time.sleep(2.0)  # let the queue and the load average settle
    scheduler.stop()
    print(f"largest N with final p95 <= {TARGET_P95} s: {best}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "engine_rss_mb": server_rss, "idle_rss_mb": idle_rss, "largest_n": best, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
