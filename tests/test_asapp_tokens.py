"""Signed stream tokens (callscribe.tokens), used by the direct-WebSocket and Twilio stream URLs."""

from __future__ import annotations

import os
import time

from callscribe.tokens import TokenSigner, load_or_create_secret


def test_issue_verify_and_refusals(tmp_path, monkeypatch):
    signer = TokenSigner(load_or_create_secret(tmp_path))
    token = signer.issue("acme", "asapp-direct-stream", 300, external_id="conv-1")
    claims = signer.verify(token, "asapp-direct-stream")
    assert claims["tenant"] == "acme" and claims["external_id"] == "conv-1"
    assert signer.verify(token, "twilio-media") is None  # bound to its purpose
    body, sig = token.split(".")
    assert signer.verify(body + "." + sig[:-2] + ("AA" if not sig.endswith("AA") else "BB"), "asapp-direct-stream") is None
    assert signer.verify("garbage", "asapp-direct-stream") is None and signer.verify(None, "x") is None
    other = TokenSigner(os.urandom(32))
    assert other.verify(token, "asapp-direct-stream") is None  # another installation's secret
    expired = signer.issue("acme", "p", -1)
    assert signer.verify(expired, "p") is None
    monkeypatch.setattr(time, "time", lambda: 10**10)
    assert signer.verify(token, "asapp-direct-stream") is None  # five minutes are long gone


def test_secret_is_kept_and_private(tmp_path):
    first = load_or_create_secret(tmp_path)
    assert load_or_create_secret(tmp_path) == first
    assert (tmp_path / "token-secret").stat().st_mode & 0o077 == 0
