"""uvicorn's server with a drain at shutdown.

At the first SIGINT/SIGTERM new legs and media are refused and sockets say goodbye in their own
protocol (ASAPP's 5001) before uvicorn closes the connections; calls in progress then get
CALLSCRIBE_DRAIN_S to decode and store their last utterances (uvicorn's graceful-shutdown timeout),
and the webhook outbox keeps what is undelivered for the next start. A second signal forces.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from callscribe.services import Services

log = logging.getLogger(__name__)
GOODBYE_TIMEOUT_S = 10.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self.services = services
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self.should_exit:
            return super().handle_exit(sig, frame)
        log.info("shutting down: draining calls in progress")
        self._draining = asyncio.get_event_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            await asyncio.wait_for(self.services.drain(), GOODBYE_TIMEOUT_S)
        except Exception:
            log.exception("draining before shutdown failed")
        super().handle_exit(sig, frame)
