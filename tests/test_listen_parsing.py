"""Property tests of the listen API's parsing: its query string and its audio framing."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callscribe.api.listen_audio import AudioDecoder
from callscribe.api.listen_params import KNOWN, REDACT_GROUPS, ListenOptions, ListenRefused, parse_query

names = st.one_of(st.sampled_from(sorted(KNOWN)), st.text(max_size=12))
values = st.one_of(st.sampled_from(["true", "false", "0", "1", "16000", "8000", "linear16", "mulaw", "en", "fr",
                                    "pci", "numbers,ssn", "300", "-1", "", "nova-3"]), st.text(max_size=20))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=8))
def test_any_query_is_options_or_a_refusal(items):
    try:
        opts = parse_query(items, callback_hosts=["hooks.example"])
    except ListenRefused as exc:
        assert str(exc)
        return
    assert isinstance(opts, ListenOptions)
    assert 1 <= opts.tracks <= opts.channels
    assert set(opts.redact) <= set(REDACT_GROUPS)
    if opts.redact:
        assert opts.redaction_policy() is not None
    if opts.utterance_end_ms is not None:
        assert opts.interim_results
    if opts.encoding is not None:
        assert opts.sample_rate is not None


bools = st.sampled_from(["true", "false"])


@settings(max_examples=200, deadline=None)
@given(encoding=st.sampled_from(["linear16", "mulaw", "alaw"]), rate=st.sampled_from([8000, 16000, 44100, 48000]),
       channels=st.integers(1, 4), multichannel=bools, interim=bools, endpointing=st.integers(0, 10000),
       redact=st.lists(st.sampled_from(sorted(REDACT_GROUPS)), max_size=3),
       tags=st.lists(st.text("abc-", min_size=1, max_size=8), max_size=2))
def test_well_formed_queries_say_what_was_asked(encoding, rate, channels, multichannel, interim, endpointing, redact,
                                                tags):
    items = [("encoding", encoding), ("sample_rate", str(rate)), ("channels", str(channels)),
             ("multichannel", multichannel), ("interim_results", interim), ("endpointing", str(endpointing)),
             ("model", "nova-3")] + [("redact", r) for r in redact] + [("tag", t) for t in tags]
    opts = parse_query(items)
    assert (opts.encoding, opts.sample_rate, opts.channels) == (encoding, rate, channels)
    assert opts.tracks == (channels if multichannel == "true" else 1)
    assert opts.interim_results == (interim == "true")
    assert opts.endpointing_ms is not None and 100 <= opts.endpointing_ms <= 5000
    assert set(opts.redact) == set(redact) and opts.tags == tuple(tags) and opts.model == "nova-3"


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 2), samples=st.integers(0, 400), cuts=st.lists(st.integers(0, 2000), max_size=12),
       encoding=st.sampled_from(["linear16", "mulaw", "alaw"]), seed=st.integers(0, 2**16))
def test_audio_split_anywhere_decodes_the_same(channels, samples, cuts, encoding, seed):
    width = 2 if encoding == "linear16" else 1
    data = np.random.default_rng(seed).integers(0, 256, samples * channels * width, dtype=np.uint8).tobytes()
    query = [("channels", str(channels)), ("encoding", encoding), ("sample_rate", "8000")]
    whole = AudioDecoder(parse_query(query)).decode(data)
    decoder = AudioDecoder(parse_query(query))
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    got = np.concatenate([decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])]
                         or [np.zeros((0, channels), np.int16)])
    assert whole.shape == (samples, channels) and np.array_equal(got, whole) and decoder.rate == 8000


def test_webhook_of_a_final_is_a_results_body():
    from callscribe.api import listen_wire
    from callscribe.asr.types import Word
    from callscribe.calls.events import CallRef, CallStateEvent, UtteranceEvent

    ref = CallRef("call-1", "acme", "deepgram", "req-1")
    final = UtteranceEvent(ref, 7, "final", "speaker", "", "stream-1", 2, 1200, 2300, "Hello there.",
                           words=(Word(" Hello", 1200, 1500, 0.9), Word(" there.", 1600, 2300, 0.8)),
                           participant="ch1", surface=listen_wire.SURFACE)
    message = listen_wire.webhook(final)
    assert message is not None
    body = json.loads(message.payload)
    assert body["type"] == "Results" and body["channel_index"] == [1] and body["is_final"]
    alt = body["channel"]["alternatives"][0]
    assert alt["transcript"] == "Hello there." and [w["word"] for w in alt["words"]] == ["hello", "there"]
    assert alt["words"][1]["punctuated_word"] == "there." and body["start"] == 1.2
    assert (body["callId"], body["participant"], body["sequence"]) == ("call-1", "ch1", 7)
    assert listen_wire.webhook(CallStateEvent(ref, 8, "media-ended")) is None
    assert listen_wire.webhook(UtteranceEvent(ref, 9, "partial", "speaker", "", "s", 3, 0, 1, "hi")) is None
