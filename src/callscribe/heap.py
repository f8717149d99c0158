"""Keep glibc's heap from holding memory the server has already freed.

Every thread that allocates (the ASR workers, ONNX Runtime's and CTranslate2's pools, the loop) gets
its own malloc arena, up to eight per core. Freed blocks inside an arena are not given back to the
system, so a burst of calls raises RSS in steps that never come down. Fewer arenas and a periodic
trim keep a long-running server's RSS near what it uses. Elsewhere than glibc, both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h
TRIM_EVERY_S = 60.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(count: int = 2) -> bool:
    """Cap malloc arenas; call before the server starts its threads. The operator's own
    MALLOC_ARENA_MAX wins. Returns whether the cap was set."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, count))


def trim() -> None:
    """Give freed heap pages back to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


async def trim_every(interval_s: float = TRIM_EVERY_S) -> None:
    """Trim off the loop at an interval, for the life of the server (cancel to stop)."""
    if _libc() is None:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        try:
            await loop.run_in_executor(None, trim)
        except Exception:  # never fatal: the trim is an economy, not a duty
            log.exception("malloc_trim failed")
