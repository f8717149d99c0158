"""`callscribe serve` as a user runs it: a real process, real port, real signals."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")}
    env.update({"CALLSCRIBE_DATA_DIR": str(tmp_path / "data"), "CALLSCRIBE_SIP_PORT": "0"}, **extra)
    return env


def wait_for(url: str, status: int, proc: subprocess.Popen, limit_s: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + limit_s  # a hang guard, not a measurement
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early with {proc.returncode}: {proc.stderr.read()}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == status:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_loads_the_bundled_model_and_stops_on_signal(tmp_path, sig):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "callscribe", "serve", "--port", str(port)],
        env=serve_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz", 200, proc)
        assert health.json()["status"] == "ok"
        ready = wait_for(f"http://127.0.0.1:{port}/readyz", 200, proc)
        assert "tiny" in ready.json()["model"].lower()
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "callscribe_active_calls" in metrics
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    # First start generates one credential pair, prints it, and keeps it for the next start.
    kept = json.loads((tmp_path / "data" / "api-key.json").read_text())
    assert kept["id"] in out and kept["secret"] in out


def test_serve_refuses_a_bad_setting_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "callscribe", "serve"], env=serve_env(tmp_path, CALLSCRIBE_PORT="http"),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CALLSCRIBE_PORT" in lines[0]


def test_configured_keys_are_not_replaced_by_a_generated_pair(tmp_path):
    from callscribe.config import load_settings
    from callscribe.credentials import load_or_create_api_keys

    s = load_settings(data_dir=tmp_path, api_keys="abc:def:acme")
    assert [(k.id, k.tenant) for k in load_or_create_api_keys(s)] == [("abc", "acme")]
    assert not (tmp_path / "api-key.json").exists()
    generated = load_or_create_api_keys(load_settings(data_dir=tmp_path))
    again = load_or_create_api_keys(load_settings(data_dir=tmp_path))
    assert generated == again and len(generated[0].secret) >= 32
