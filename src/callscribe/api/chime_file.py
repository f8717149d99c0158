"""The Chime surface's meetings file, `<data_dir>/chime-meetings.json` (mode 0600): read once at
start, written after changes. Changes within SAVE_DELAY_S share one write, made in a thread (off the
event loop) as temp file, fsync, rename and fsync of the directory, so after a crash the file is the
old or the new one, whole. A file that cannot be parsed is kept aside, never overwritten."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

FILE = "chime-meetings.json"
SAVE_DELAY_S = 0.2  # changes within this long share one write of the file

T = TypeVar("T")


class MeetingsFile:
    def __init__(self, data_dir: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = Path(data_dir) / FILE
        self._snapshot = snapshot  # what to write, taken on the event loop
        self.dirty = False
        self._saving: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    def load(self, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """The file's contents through `parse`; None when there is no file, or when it cannot be
        parsed (it is then kept as `.corrupt-<time>` and the error logged). Any other OSError
        propagates: starting empty would overwrite the meetings at the next save."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return parse(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError):
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            os.replace(self.path, aside)
            log.exception("%s cannot be parsed: it is kept as %s and the server starts with NO meetings; "
                          "restore it by hand if it can be repaired", self.path, aside)
            return None

    def changed(self) -> None:
        """Note a change: one write follows shortly, however many changes come before it. Without a
        running loop, written at once."""
        self.dirty = True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.write(self._snapshot())
            self.dirty = False
            return
        if self._saving is None or self._saving.done():
            self._saving = asyncio.create_task(self._save_later(), name="chime-meetings-save")

    async def _save_later(self) -> None:
        await asyncio.sleep(SAVE_DELAY_S)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending changes now (and wait for it)."""
        async with self._write_lock:
            while self.dirty:
                self.dirty = False
                payload = self._snapshot()  # on the loop: the meetings do not change under it
                try:
                    await asyncio.to_thread(self.write, payload)
                except OSError:
                    self.dirty = True
                    log.exception("writing %s failed; retried at the next change", self.path)
                    return

    async def close(self) -> None:
        """Write what is pending; no delayed write is left behind."""
        await self.flush()
        if self._saving is not None:
            self._saving.cancel()

    def write(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
