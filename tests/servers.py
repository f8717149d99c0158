"""Run the real app under uvicorn in a background thread, on a free port, for tests.

    with running_app(settings, engine=engine) as server:
        httpx.post(server.url + "/mg-autotranscribe/v1/start-streaming", ...)
        server.run(some_coroutine())   # runs on the app's event loop, returns its result

The listening socket is bound before the app is built, so `settings.port` (and so
`settings.resolved_public_url`, used in handed-out stream URLs) is the real port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

HANG_GUARD_S = 120.0  # not a timing assertion: only stops a broken test from hanging forever


def wait_until(predicate: Any, what: str = "condition", limit_s: float = HANG_GUARD_S) -> Any:
    """Poll until predicate() is truthy and return it; the limit only stops a broken test hanging."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class ServedApp:
    def __init__(self, app: Any, sock: socket.socket, settings: Any):
        import uvicorn

        self.app = app
        self.services = app.state.services
        self.settings = settings
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self._sock = sock
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=f"app-{port}", daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self._sock]))

    def start(self, wait_ready: bool) -> "ServedApp":
        self.thread.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        if wait_ready:
            while not self.services.ready.is_set():
                if self.services.load_error or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not get ready: {self.services.load_error}")
                time.sleep(0.05)
        return self

    def run(self, coro: Any, timeout: float = HANG_GUARD_S) -> Any:
        """Run a coroutine on the app's event loop (where the registry lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(self, *events: Any) -> None:
        """Publish events on the app's bus, in order, from the app's loop (as the registry does)."""

        async def go() -> None:
            for event in events:
                self.services.bus.publish(event)

        self.run(go())

    def flush(self) -> None:
        """Wait until the persister has stored everything published so far."""
        self.run(self.services.persister.flush())

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(HANG_GUARD_S)
        self._sock.close()


@contextmanager
def running_app(settings: Any, *, engine: Any = None, wait_ready: bool = True) -> Iterator[ServedApp]:
    """Serve create_app(settings, engine=engine) until the block ends.

    `wait_ready` waits for the speech model (pass a loaded `engine` to share one between apps).
    """
    from callscribe.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    if not settings.public_url:
        settings = settings.model_copy(update={"port": sock.getsockname()[1], "host": "127.0.0.1"})
    served = ServedApp(create_app(settings, engine=engine), sock, settings)
    try:
        served.start(wait_ready)
        yield served
    finally:
        served.stop()
