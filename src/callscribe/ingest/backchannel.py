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
                 finals_only: bool = True) -> None:
        self._send = send
        self._finals_only = finals_only
        self.stream_id: str | None = None  # set once the leg exists; events of other legs are ignored
        self._queue: asyncio.Queue[UtteranceEvent] = asyncio.Queue()
        self._unsubscribe = bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="backchannel")

    def _on_event(self, event: CallEvent) -> None:
        if (isinstance(event, UtteranceEvent) and self.stream_id is not None and event.stream_id == self.stream_id
                and (event.kind == "final" or not self._finals_only)):
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
