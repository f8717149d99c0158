"""Peers for the cluster tests: a throwaway redis-server, and `callscribe serve` nodes sharing it and
one PostgreSQL database.

With CALLSCRIBE_TEST_REDIS_URL set (scripts/test.sh starts a redis-server and exports it) that
server is used; otherwise a redis-server binary on PATH is started on a free loopback port. Without
either the tests are skipped, saying why (CI installs redis-server, so there they run).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from test_serve import free_port

ENV_URL = "CALLSCRIBE_TEST_REDIS_URL"
KEY = ("cl", "cl-secret")
HEADERS = {"asapp-api-id": KEY[0], "asapp-api-secret": KEY[1]}
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class RedisProcess:
    """A redis-server of the test's own (so it may be stopped and started again on the same port)."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server not found (apt-get install redis-server); CI installs it")
        self.root = Path(tempfile.mkdtemp(prefix="callscribe-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisProcess":
        import redis

        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    """A Redis URL for the session."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    server = RedisProcess().start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server):
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


@pytest.fixture
def pg_url(pg_server):
    import pg

    with pg.fresh_database(pg_server) as url:
        yield url


class Node:
    """`callscribe serve` as one node of a cluster, in its own process and data dir."""

    def __init__(self, name: str, root: Path, redis_url: str, pg_url: str, **extra: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.data = root / name
        self.data.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")}
        self.env.update({"CALLSCRIBE_DATA_DIR": str(self.data), "CALLSCRIBE_SIP_PORT": "0",
                         "CALLSCRIBE_HOST": "127.0.0.1", "CALLSCRIBE_PORT": str(self.port), "CALLSCRIBE_PUBLIC_URL": self.url,
                         "CALLSCRIBE_REDIS_URL": redis_url, "CALLSCRIBE_DATABASE_URL": pg_url,
                         "CALLSCRIBE_NODE_ID": name, "CALLSCRIBE_CLUSTER_TTL_S": "4",
                         "CALLSCRIBE_API_KEYS": f"{KEY[0]}:{KEY[1]}:acme", "CALLSCRIBE_ASR_WORKERS": "1",
                         "CALLSCRIBE_WEBHOOK_SECRET": WEBHOOK_SECRET, **extra})
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Node":
        self.log = (self.data / "serve.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "callscribe", "serve"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, limit_s: float = 180.0) -> "Node":
        deadline = time.monotonic() + limit_s  # a hang guard, not a measurement
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code in (200, 503) and \
                        httpx.get(self.url + "/readyz", timeout=2).json().get("status") not in ("loading",):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"node {self.name} never got ready: {self.output()}")

    def output(self) -> str:
        return (self.data / "serve.log").read_text()[-4000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=HEADERS, timeout=60, **kw)

    def post(self, path: str, body: dict, **kw) -> httpx.Response:
        return httpx.post(self.url + path, headers=HEADERS, json=body, timeout=180, **kw)
