"""Command line: serve | transcribe FILE | bench."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from callscribe import __version__
from callscribe.config import ConfigError, load_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from callscribe import heap
    from callscribe.app import create_app
    from callscribe.server import DrainingServer

    heap.limit_arenas()  # before any worker thread exists (see heap.py)

    # Owner-only for every file the server makes (database, recordings, secrets), also where a
    # library picks the mode.
    os.umask(0o077)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # uvicorn handles SIGINT/SIGTERM with a graceful shutdown, then re-raises the signal under the
    # handlers that were there before it; quiet ones make a graceful stop exit with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            ws_max_size=1 << 20, timeout_graceful_shutdown=int(settings.drain_s) or None)
    DrainingServer(config, app.state.services).run()
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from callscribe.transcribe import run_transcribe

    return run_transcribe(args)


def _bench(args: argparse.Namespace) -> int:
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / f"{args.what}.py"
    if not script.exists():
        print(f"callscribe bench: no benchmark {args.what!r} (bench/ is in the source checkout)", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callscribe", description="Real-time call transcription gateway")
    parser.add_argument("--version", action="version", version=f"callscribe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway (HTTP and WebSocket, SIPREC) on the configured ports")
    p.add_argument("--host", default=None, help="listen address (CALLSCRIBE_HOST)")
    p.add_argument("--port", type=int, default=None, help="listen port (CALLSCRIBE_PORT)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("transcribe", help="print the transcript of an audio file")
    p.add_argument("file", help="any audio file ffmpeg can decode")
    p.add_argument("--words", action="store_true", help="show word times and confidences")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--channels", choices=["mix", "split"], default="mix",
                   help="split: transcribe each channel as its own speaker")
    p.add_argument("--model", default=None, help="model directory or name (CALLSCRIBE_MODEL)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_transcribe)

    p = sub.add_parser("bench", help="run a benchmark from bench/ (engine, redaction, ...)")
    p.add_argument("what")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"callscribe: bad setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
