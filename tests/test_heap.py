"""The heap economies: an arena cap that yields to the operator's own setting, and a trim."""

import os
import subprocess
import sys

import pytest

from callscribe import heap

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="not glibc")

PROBE = "from callscribe import heap; print(heap.limit_arenas())"


def _probe(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_arena_cap_is_set_when_the_operator_sets_none() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _probe(env) == "True"


def test_operator_malloc_arena_max_wins() -> None:
    assert _probe({**os.environ, "MALLOC_ARENA_MAX": "4"}) == "False"


async def test_trim_runs_off_the_loop_until_cancelled() -> None:
    import asyncio

    task = asyncio.create_task(heap.trim_every(0.01))
    await asyncio.sleep(0.1)
    assert not task.done()  # a trim that raised would have been logged, not ended the task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
