"""Property tests of the audio-stream start request's validation (api/memories.parse_start)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callscribe.api import memories
from callscribe.api.errors import ApiError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)

OPTION_VALUES = {
    **{name: st.booleans() for name in memories._BOOL},
    **{name: st.integers(0, 10_000) | st.floats(0, 10_000) for name in memories._NUMBER if name != "inactivity_timeout"},
    "inactivity_timeout": st.integers(1, 3600),
    **{name: st.text(max_size=10) for name in memories._STRING if name != "language_code"},
    "language_code": st.sampled_from(["en", "en-US", "en_us", "fr"]),
    **{name: st.lists(st.text(max_size=8), max_size=3) for name in memories._LIST},
    **{name: st.dictionaries(st.text(max_size=5), st.booleans(), max_size=2) for name in memories._OBJECT},
}

urls = st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
                 st.sampled_from(["http", "https", "rtmp", "rtsp", "HTTP"]),
                 st.sampled_from(["127.0.0.1", "example.com", "cam.local:8554"]),
                 st.text(alphabet="abcdefghijklmnop0123456789._-/", max_size=30))

valid_bodies = st.builds(
    lambda url, provider, options: {"audio_url": url, **({"provider": provider} if provider else {}), **options},
    urls, st.sampled_from([None, "assemblyai", "elevenlabs"]),
    st.fixed_dictionaries({}, optional=OPTION_VALUES))


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(["audio_url", "provider", *OPTION_VALUES]),
                                              json_values, max_size=5)))
def test_any_json_is_a_request_or_a_400(body):
    try:
        req = memories.parse_start(body)
    except ApiError as err:
        assert err.status == 400 and err.message
        return
    assert isinstance(body, dict) and req.audio_url == body["audio_url"].strip()


@settings(max_examples=300, deadline=None)
@given(valid_bodies)
def test_valid_requests_are_taken_as_given(body):
    req = memories.parse_start(body)
    assert req.audio_url == body["audio_url"]
    assert req.provider == body.get("provider", "assemblyai")
    assert req.per_channel == (body.get("speaker_labels") is True or body.get("multichannel") is True)
    assert req.redact == (body.get("redact_pii") is True or bool(body.get("redact_pii_policies")))
    assert req.format_text == (body.get("format_text") is not False)
    assert req.inactivity_timeout_s == body.get("inactivity_timeout", memories.DEFAULT_INACTIVITY_S)
    given_options = {k for k, v in body.items() if k not in ("audio_url", "provider") and v not in (None, False)}
    assert set(req.ignored) == given_options - set(memories.HONOURED)
    params = memories.stream_params(req)
    assert params.redaction_output == ("redacted" if req.redact else "unredacted")
    assert params.detailed_token == (not req.redact)  # words only when nothing is redacted


@settings(max_examples=200, deadline=None)
@given(valid_bodies, st.sampled_from(sorted(OPTION_VALUES)), json_values)
def test_a_wrongly_typed_option_is_named_in_the_400(body, name, value):
    body = {**body, name: value}
    try:
        memories.parse_start(body)
    except ApiError as err:
        assert err.status == 400
        assert name in err.message or "language_code" in err.message or "inactivity_timeout" in err.message
