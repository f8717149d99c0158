"""Soak: real-time legs over the wire for a long time, reporting drift (not a test; not in CI).

    python bench/soak.py [--legs 16] [--minutes 60] [--protocol asapp] [--url ... --api-key ID:SECRET]
                         [--json FILE]

Keeps `--legs` legs of the two-party calls of bench/load.py streaming in real time to one
`callscribe serve` (started here, or given by --url/--server-pid) for `--minutes`, in back-to-back
one-minute rounds, and after each minute prints the server's RSS and open files (psutil on its pid),
its queue depths and active legs (/metrics), and the minute's final latency p50/p95 and misses. At
the end: the drift of RSS against the value after ten minutes (target: within 5 %) and of open files
(target: no growth).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (bench/load.py: the same calls, client and measurements)


async def server_state(server: load.Server) -> dict[str, float | None]:
    proc = psutil.Process(server.pid) if server.pid else None
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = await load.scrape(http, server)
    queues = {k: v for k, v in metrics.items() if "queue" in k}
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 1) if proc else None,
            "open_files": (proc.num_fds() if proc else None),
            "active_legs": metrics.get("callscribe_active_legs"),
            "queue_depth": round(sum(queues.values()), 1) if queues else None}


async def soak(args: argparse.Namespace) -> list[dict]:
    key_id, _, secret = args.api_key.partition(":")
    server = load.Server(args.url, (key_id, secret), args.server_pid)
    server.start()
    calls = load.make_calls(60.0)
    rows: list[dict] = []
    step = argparse.Namespace(stagger=args.stagger, seconds=60.0)
    t0 = time.monotonic()
    try:
        for minute in range(1, args.minutes + 1):
            r = await load.run_step(server, calls, args.legs, args.protocol, args.frame_ms, step, None)
            row = {"minute": minute, "elapsed_s": round(time.monotonic() - t0),
                   "final_p50_s": r.get("final_p50_s"), "final_p95_s": r.get("final_p95_s"),
                   "missed": r.get("missed"), "refused": r.get("refused"), **(await server_state(server))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return rows


def drift(rows: list[dict]) -> dict[str, float | None]:
    at10 = next((r for r in rows if r["minute"] == 10), rows[0] if rows else None)
    if at10 is None or not rows:
        return {}
    last = rows[-1]
    rss = (last["rss_mb"] - at10["rss_mb"]) / at10["rss_mb"] * 100 if at10.get("rss_mb") else None
    return {"rss_at_10_min_mb": at10.get("rss_mb"), "rss_at_end_mb": last.get("rss_mb"),
            "rss_drift_pct": round(rss, 2) if rss is not None else None,
            "open_files_at_10_min": at10.get("open_files"), "open_files_at_end": last.get("open_files")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--legs", type=int, default=16)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--protocol", choices=["asapp", "twilio"], default="asapp")
    p.add_argument("--frame-ms", type=int, default=100)
    p.add_argument("--stagger", type=float, default=8.0)
    p.add_argument("--url", default=None)
    p.add_argument("--api-key", default=":".join(load.API_KEY))
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = asyncio.run(soak(args))
    summary = drift(rows)
    print(json.dumps({"drift": summary}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": rows, "drift": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
