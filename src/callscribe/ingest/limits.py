"""How many media sockets the process holds: in all, per source address, and not yet started
(before a valid start a socket is unauthenticated or has proved nothing; those are the cheapest to
open and the first to cap). A socket over a limit is refused before the upgrade with 503."""

from __future__ import annotations

import threading
from collections import Counter


class ConnectionLimits:
    def __init__(self, total: int, per_source: int, unstarted: int) -> None:
        self.total, self.per_source, self.unstarted = total, per_source, unstarted
        self._open = 0
        self._unstarted = 0
        self._by_source: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, source: str) -> "Slot | str":
        """A slot for a new socket from `source`, or the reason it is refused."""
        with self._lock:
            if self._open >= self.total:
                return "too many connections"
            if self._by_source[source] >= self.per_source:
                return "too many connections from this address"
            if self._unstarted >= self.unstarted:
                return "too many connections waiting to start"
            self._open += 1
            self._unstarted += 1
            self._by_source[source] += 1
            return Slot(self, source)

    def _started(self) -> None:
        with self._lock:
            self._unstarted -= 1

    def _release(self, source: str, started: bool) -> None:
        with self._lock:
            self._open -= 1
            if not started:
                self._unstarted -= 1
            self._by_source[source] -= 1
            if self._by_source[source] <= 0:
                del self._by_source[source]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"open": self._open, "unstarted": self._unstarted, "sources": len(self._by_source)}


class Slot:
    """One socket's place: `started()` once its protocol's start is accepted, `release()` at the end."""

    def __init__(self, limits: ConnectionLimits, source: str) -> None:
        self._limits, self._source = limits, source
        self._started = self._released = False

    def started(self) -> None:
        if not self._started and not self._released:
            self._started = True
            self._limits._started()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._release(self._source, self._started)


UNLIMITED = ConnectionLimits(1 << 62, 1 << 62, 1 << 62)  # for apps built without limits (tests of one part)
