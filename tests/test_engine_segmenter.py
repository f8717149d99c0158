"""Utterance cutting from VAD probabilities (no model): endpoint, pre-roll, clicks, forced cuts."""

from __future__ import annotations

import numpy as np

from callscribe.asr.segmenter import FRAME, Segmenter, SegmenterConfig


def run(probs: list[float], **cfg):
    seg = Segmenter(SegmenterConfig(**cfg))
    frames = np.arange(len(probs) * FRAME, dtype=np.float32)  # sample index as the value
    cuts = seg.push(frames, np.asarray(probs)) + seg.flush()
    return cuts


def test_endpoint_after_the_silence_with_preroll_and_tail():
    probs = [0.0] * 20 + [0.9] * 30 + [0.0] * 25  # 32 ms frames: 0.96 s speech, then 0.8 s quiet
    cuts = [c for c in run(probs, endpoint_silence_ms=600, partials=False) if c.kind == "final"]
    assert len(cuts) == 1
    cut = cuts[0]
    assert cut.start_sample == (20 - round(450 / 32)) * FRAME  # 450 ms pre-roll
    assert cut.audio[0] == cut.start_sample  # the audio is the leg's own samples from there
    speech_end = 50 * FRAME
    assert speech_end < cut.start_sample + len(cut.audio) <= speech_end + round(200 / 32) * FRAME
    assert 0.55 < cut.trailing_silence_s < 0.7


def test_short_pauses_do_not_split_and_clicks_are_dropped():
    probs = [0.9] * 20 + [0.1] * 10 + [0.9] * 20 + [0.0] * 30 + [0.9] * 3 + [0.0] * 30
    finals = [c for c in run(probs, endpoint_silence_ms=600, partials=False) if c.kind == "final"]
    assert len(finals) == 1  # the 0.3 s pause is inside the utterance; the 0.1 s click is dropped


def test_partials_every_interval_while_speaking():
    probs = [0.9] * 120 + [0.0] * 30
    cuts = run(probs, partial_interval_ms=1000, first_partial_ms=700)
    kinds = [c.kind for c in cuts]
    assert kinds[-1] == "final" and kinds.count("final") == 1
    partial_lengths = [len(c.audio) / 16000 for c in cuts if c.kind == "partial"]
    assert len(partial_lengths) == 4 and partial_lengths == sorted(partial_lengths)
    assert all(0.9 < b - a < 1.1 for a, b in zip(partial_lengths, partial_lengths[1:]))


def test_max_length_cuts_at_the_quietest_recent_frame_and_loses_nothing():
    probs = ([0.9] * 200 + [0.4] + [0.9] * 100) + [0.0] * 30  # 9.6 s of speech, one dip at frame 200
    cuts = [c for c in run(probs, max_utterance_ms=8000, partials=False) if c.kind == "final"]
    assert len(cuts) == 2
    assert cuts[0].start_sample + len(cuts[0].audio) == cuts[1].start_sample  # contiguous
    assert cuts[1].start_sample == 201 * FRAME  # right after the dip


def test_speculative_cut_is_the_final_to_be_when_the_silence_lasts():
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 25
    cuts = run(probs, endpoint_silence_ms=600, speculative_ms=300, partials=False)
    spec = [c for c in cuts if c.kind == "speculative"]
    final = [c for c in cuts if c.kind == "final"]
    assert len(spec) == 1 and len(final) == 1
    assert spec[0].segment == final[0].segment and spec[0].start_sample == final[0].start_sample
    assert np.array_equal(spec[0].audio, final[0].audio)
    assert cuts.index(spec[0]) < cuts.index(final[0])


def test_speech_after_the_speculative_cut_makes_a_longer_final():
    probs = [0.9] * 30 + [0.0] * 12 + [0.9] * 20 + [0.0] * 25  # a 0.38 s pause, then more speech
    cuts = run(probs, endpoint_silence_ms=600, speculative_ms=300, partials=False)
    spec = [c for c in cuts if c.kind == "speculative"]
    final = [c for c in cuts if c.kind == "final"]
    assert len(final) == 1 and len(spec) == 2
    assert len(spec[0].audio) < len(final[0].audio) and np.array_equal(spec[1].audio, final[0].audio)


def test_a_lone_word_and_a_pause_stay_with_what_follows_under_a_short_endpoint():
    # "Great," (0.3 s), a 0.4 s pause, then a sentence: at endpoint 300 ms the word used to end alone
    # and be dropped (or decoded into a loop); it waits for the short hold and joins the sentence.
    probs = [0.0] * 10 + [0.9] * 10 + [0.0] * 13 + [0.9] * 60 + [0.0] * 30
    finals = [c for c in run(probs, endpoint_silence_ms=300, partials=False) if c.kind == "final"]
    assert len(finals) == 1
    assert finals[0].start_sample <= 10 * FRAME < 93 * FRAME < finals[0].start_sample + len(finals[0].audio)


def test_a_long_clause_still_ends_at_a_short_endpoint():
    probs = [0.9] * 40 + [0.0] * 13 + [0.9] * 40 + [0.0] * 30  # 1.3 s of speech, then a 0.4 s pause
    finals = [c for c in run(probs, endpoint_silence_ms=300, partials=False) if c.kind == "final"]
    assert len(finals) == 2


def test_a_lone_word_followed_by_silence_still_gets_its_final():
    probs = [0.0] * 10 + [0.9] * 10 + [0.0] * 40  # "Yes." and nothing after it
    finals = [c for c in run(probs, endpoint_silence_ms=300, partials=False) if c.kind == "final"]
    assert len(finals) == 1 and 0.55 < finals[0].trailing_silence_s < 0.7
