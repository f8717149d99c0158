"""Secrets that callscribe generates on first start and keeps in the data dir (the API key pair,
the stream-token secret, the webhook signing secret): made atomically with mode 0600, so two
processes starting at once agree on one, and never readable by other users."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def load_or_create(path: Path, generate: Callable[[], str], *, announce: str | None = None) -> str:
    """The text kept at `path`; made with `generate()` when missing. When it is made and `announce`
    is given, one line says where it is kept (the operator may need to copy it)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate() + "\n")
    try:
        os.link(tmp, path)  # fails if another process made it first; theirs wins
        made = True
    except FileExistsError:
        made = False
    finally:
        tmp.unlink(missing_ok=True)
    if made and announce:
        print(f"callscribe: generated {announce}, kept in {path}", flush=True)
    return path.read_text().strip()
