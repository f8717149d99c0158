"""Stream-URL tokens and X-Twilio-Signature checks, with signature vectors computed by the
official twilio library."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from callscribe.config import Settings
from callscribe.ingest import twilio_auth
from callscribe.tokens import TokenSigner


def test_stream_url_carries_a_token_bound_to_the_tenant(tmp_path):
    settings = Settings(data_dir=tmp_path, public_url="https://scribe.example.com")
    url = twilio_auth.stream_url(settings, "acme")
    assert url.startswith("wss://scribe.example.com/mg-autotranscribe/v1/twilio-media?token=")
    token = twilio_auth.token_from_query(url.partition("?")[2])
    assert twilio_auth.tenant_of_token(settings, token) == "acme"
    # Plain http public URL -> ws.
    assert Settings(data_dir=tmp_path, port=9999).resolved_public_url == "http://127.0.0.1:9999"
    assert twilio_auth.stream_url(Settings(data_dir=tmp_path, port=9999), "t").startswith("ws://127.0.0.1:9999/")


def test_expired_forged_and_foreign_tokens(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert twilio_auth.tenant_of_token(settings, twilio_auth.issue_token(settings, "acme", ttl_s=-1)) is None
    other_install = TokenSigner(b"another installation's secret").issue("acme", twilio_auth.TOKEN_PURPOSE, 300)
    assert twilio_auth.tenant_of_token(settings, other_install) is None
    from callscribe.tokens import token_signer

    other_purpose = token_signer(settings).issue("acme", "asapp-stream", 300)
    assert twilio_auth.tenant_of_token(settings, other_purpose) is None
    good = twilio_auth.issue_token(settings, "acme")
    payload, _, sig = good.partition(".")
    assert twilio_auth.tenant_of_token(settings, payload[:-2] + "xx." + sig) is None
    assert twilio_auth.tenant_of_token(settings, None) is None
    assert twilio_auth.tenant_of_token(settings, "") is None


# X-Twilio-Signature -----------------------------------------------------------------------------

AUTH_TOKEN = "12345678901234567890123456789012"


def _settings(**kw) -> Settings:
    return Settings(twilio_auth_token=AUTH_TOKEN, **kw)


@pytest.mark.parametrize("public,expected_base", [
    ("https://scribe.example.com", "wss://scribe.example.com"),
    ("http://127.0.0.1:8080", "ws://127.0.0.1:8080"),
    ("wss://scribe.example.com/prefix", "wss://scribe.example.com/prefix"),
])
def test_signature_vectors_from_the_twilio_library(public, expected_base):
    settings = _settings(public_url=public)
    query = "token=abc.def-ghi"
    url = f"{expected_base}/mg-autotranscribe/v1/twilio-media?{query}"
    good = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    assert twilio_auth.signature_ok(settings, query, good)
    assert not twilio_auth.signature_ok(settings, "token=other", good)  # the query is signed too
    assert not twilio_auth.signature_ok(settings, query, RequestValidator("x" * 32).compute_signature(url, {}))
    assert not twilio_auth.signature_ok(settings, query, None)
    assert not twilio_auth.signature_ok(settings, query, "")
    # No auth token configured: nothing to check.
    assert twilio_auth.signature_ok(Settings(public_url=public), query, None)


def test_signature_sha256_when_twilio_says_so():
    from twilio import request_validator

    if not hasattr(request_validator, "HMAC_SHA256"):
        pytest.skip("this twilio version signs with HMAC-SHA1 only")
    settings = _settings(public_url="https://scribe.example.com")
    url = "wss://scribe.example.com/mg-autotranscribe/v1/twilio-media"
    sig = RequestValidator(AUTH_TOKEN).compute_signature(url, {}, algorithm=request_validator.HMAC_SHA256)
    assert twilio_auth.signature_ok(settings, "", sig, "algorithm=HMAC-SHA256") or \
        twilio_auth.signature_ok(settings, "", sig, f"algorithm={request_validator.HMAC_SHA256}")
