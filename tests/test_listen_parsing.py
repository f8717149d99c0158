"""Property tests of the listen API's parsing: its query string and its audio framing."""

from __future__ import annotations

import io
import json
import wave

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callscribe.ingest.base import AdapterError
from callscribe.ingest.listen import AudioDecoder
from callscribe.ingest.listen_params import KNOWN, REDACT_GROUPS, ListenOptions, ListenRefused, parse_query

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


def _wav(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 2), samples=st.integers(0, 400), cuts=st.lists(st.integers(0, 2000), max_size=12),
       as_wav=st.booleans(), seed=st.integers(0, 2**16))
def test_audio_split_anywhere_decodes_the_same(channels, samples, cuts, as_wav, seed):
    pcm = np.random.default_rng(seed).integers(-32768, 32767, (samples, channels), dtype=np.int16)
    data = _wav(pcm, 16000) if as_wav else pcm.astype("<i2").tobytes()
    query = [("channels", str(channels))] + ([] if as_wav else [("encoding", "linear16"), ("sample_rate", "16000")])
    decoder = AudioDecoder(parse_query(query))
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    out = [decoder.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])]
    got = np.concatenate([o for o in out if o is not None] or [np.zeros((0, channels), np.int16)])
    assert np.array_equal(got, pcm) and decoder.rate == 16000


@given(st.binary(min_size=4, max_size=64))
def test_audio_without_encoding_must_be_wav(data):
    decoder = AudioDecoder(parse_query([]))
    try:
        decoder.decode(data)
    except AdapterError as exc:
        assert exc.reason.startswith("DATA-0000")


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
