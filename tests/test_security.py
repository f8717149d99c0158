"""Security hardening against the running app: secrets never in start-up errors, credentials only
in headers (HTTP), failed-auth throttling per source address, /metrics behind an optional token,
and owner-only data files."""

from __future__ import annotations

import os
import stat

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
WRONG = {"asapp-api-id": "ka", "asapp-api-secret": "wrong"}


def test_a_malformed_api_keys_setting_never_echoes_a_secret(monkeypatch, capsys):
    from callscribe.cli import main

    for name in list(os.environ):
        if name.startswith("CALLSCRIBE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CALLSCRIBE_API_KEYS", "good:Sup3rSecretOne:acme,Sup3rSecretTwo")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CALLSCRIBE_API_KEYS" in err and "entry 2 of 2" in err
    assert "Sup3rSecret" not in err
    monkeypatch.delenv("CALLSCRIBE_API_KEYS")
    monkeypatch.setenv("CALLSCRIBE_AUDIOHOOK_KEYS", "hook:Sup3rSecret!!")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CALLSCRIBE_AUDIOHOOK_KEYS" in err and "Sup3rSecret" not in err


def test_http_routes_take_credentials_from_headers_only(start_app):
    app = start_app()
    query = {"apiId": "ka", "apiSecret": "sa", "asapp-api-id": "ka", "asapp-api-secret": "sa"}
    for method, path in [("GET", "/v1/calls"), ("GET", "/v1/calls/CA-x"), ("GET", "/v1/webhooks/dead"),
                         ("GET", "/conversation/v1/conversation/messages?externalId=CA-x"),
                         ("GET", "/mg-autotranscribe/v1/twilio-media-stream-url"),
                         ("POST", "/mg-autotranscribe/v1/start-streaming")]:
        r = httpx.request(method, app.url + path, params=query, json={})
        assert r.status_code == 401, (path, r.status_code)
        assert httpx.request(method, app.url + path, headers=ACME, json={}).status_code != 401, path
    # The events WebSocket keeps ?apiId=&apiSecret= (browsers cannot set headers): 4404, not 4401.
    with connect(f"{app.ws_url}/v1/calls/CA-x/events?apiId=ka&apiSecret=sa") as ws:
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 4404


def test_failed_authentications_are_throttled_per_source_address(start_app):
    app = start_app(auth_failures_per_minute=4)
    with httpx.Client(base_url=app.url) as client:
        for _ in range(2):
            assert client.get("/v1/calls", headers=WRONG).status_code == 401
        # WebSockets refused for bad credentials count too: the native events socket (4401) and
        # the ASAPP direct stream with a forged token (1008).
        for url, code in ((f"{app.ws_url}/v1/calls/CA-x/events?apiId=ka&apiSecret=wrong", 4401),
                          (f"{app.ws_url}/autotranscribe/v1/stream?token=forged.token", 1008)):
            with pytest.raises(Exception) as closed:
                with connect(url) as ws:
                    ws.recv(timeout=30)
            assert closed.value.rcvd.code == code
        blocked = client.get("/v1/calls", headers=ACME)  # even the right secret, for the rest of the minute
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "429-01"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert client.get("/healthz").status_code == 200
    with pytest.raises(InvalidStatus):
        connect(f"{app.ws_url}/v1/calls/CA-x/events?apiId=ka&apiSecret=sa")
    other = httpx.Client(base_url=app.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        assert other.get("/v1/calls", headers=ACME).status_code == 200  # another source is not affected


def test_metrics_want_the_token_when_one_is_set(start_app):
    app = start_app(metrics_token="m3trics-t0ken")
    assert httpx.get(app.url + "/metrics").status_code == 401
    wrong = httpx.get(app.url + "/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "401-01"
    ok = httpx.get(app.url + "/metrics", headers={"authorization": "Bearer m3trics-t0ken"})
    assert ok.status_code == 200 and "callscribe_active_calls" in ok.text
    open_app = start_app(data_dir=app.settings.data_dir.parent / "open")
    assert httpx.get(open_app.url + "/metrics").status_code == 200


def _private(path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_data_files_are_owner_only(start_app, call_script, tmp_path):
    app = start_app(api_keys="", webhook_url="http://127.0.0.1:9/hook")
    data = app.settings.data_dir
    key = __import__("json").loads((data / "api-key.json").read_text())
    creds = {"asapp-api-id": key["id"], "asapp-api-secret": key["secret"]}
    assert httpx.get(app.url + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=creds).status_code == 200
    c = call_script("CA-files", tenant="default")
    app.publish(c.state("media-connected"), c.started(), c.utterance("customer", "kept private"))
    app.flush()
    files = sorted(p for p in data.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"callscribe.db", "api-key.json", "token-secret", "webhook-secret"} <= names
    assert [p.name for p in files if not _private(p)] == []


def test_recordings_are_owner_only_and_stop_cleanly_at_their_cap(tmp_path, caplog, monkeypatch):
    import wave

    from callscribe.calls import recording

    rec = recording.LegRecorder(tmp_path, "acme", "c-1", "customer", "s1", max_seconds=1)
    frame = np.full(1600, 1000, dtype=np.int16)  # 0.2 s at 8 kHz
    for _ in range(10):  # 2 s offered
        rec.write(frame, 8000)
    assert rec.end_reason == "max-duration" and rec.samples == 8000 and rec.duration_ms == 1000
    assert any("maximum length" in r.getMessage() for r in caplog.records)
    assert rec.close() is True
    with wave.open(str(rec.path)) as w:
        assert (w.getframerate(), w.getnframes()) == (8000, 8000)
    assert _private(rec.path) and _private(rec.path.parent) and _private(tmp_path / "recordings")

    # The format's own limit is a cap too: the header never overflows (no struct.error, no 500).
    monkeypatch.setattr(recording, "_RIFF_MAX_SAMPLES", 2000)
    big = recording.LegRecorder(tmp_path, "acme", "c-1", "agent", "s1")
    for _ in range(3):
        big.write(frame, 8000)
    assert big.end_reason == "max-duration" and big.samples == 2000 and big.close() is True
