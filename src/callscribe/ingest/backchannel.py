"""Final transcripts of one leg, sent back on the adapter's own socket (the ASAPP direct
WebSocket's `transcript` messages; later the AudioHook transcription connector and the listen API).

Subscribes to the bus, keeps the leg's finals in order on a queue, and sends each through the
adapter's `send`; `drain` waits until everything published so far has been sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from callscribe.calls.events import CallEvent, EventBus, UtteranceEvent

log = logging.getLogger(__name__)


class Backchannel:
    def __init__(self, bus: EventBus, send: Callable[[UtteranceEvent], Awaitable[None]], *,
                 finals_only: bool = True, match: Callable[[UtteranceEvent], bool] | None = None) -> None:
        self._send = send
        self._finals_only = finals_only
        # Which events are this socket's: one leg's (set stream_id once it exists), or any rule
        # (`match`: a call's participants, across restarts and late joiners).
        self.stream_id: str | None = None
        self._match = match
        self._queue: asyncio.Queue[UtteranceEvent] = asyncio.Queue()
        self._unsubscribe = bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="backchannel")

    def _on_event(self, event: CallEvent) -> None:
        if not isinstance(event, UtteranceEvent) or (event.kind != "final" and self._finals_only):
            return
        if self._match(event) if self._match is not None else event.stream_id == self.stream_id:
            self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._send(event)
            except Exception:
                log.debug("sending a transcript back failed", exc_info=True)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        await self._queue.join()

    def close(self) -> None:
        self._unsubscribe()
        self._task.cancel()
