"""The batched decode: accuracy, guards against Whisper's failure modes, model resolution."""

from __future__ import annotations

import numpy as np
import pytest

from callscribe.asr.engine import HALLUCINATIONS, ModelNotFound, _cut_repeats, resolve_model_path
from callscribe.asr.wer import normalize, wer
from callscribe.audio import codecs
from callscribe.audio.resample import resample


def f32(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def test_a_batch_of_different_lengths_decodes_each_utterance(engine, speech):
    texts = ["Good morning.", "It should be with you by Friday afternoon.",
             "Usually between three and five business days, sometimes a little longer if the bank is slow."]
    hyps = engine.decode_batch([f32(speech.say(t)) for t in texts])
    for text, hyp in zip(texts, hyps):
        assert wer(text, hyp.text) <= 0.15, hyp.text
        assert hyp.words and hyp.words[-1].end_s <= len(speech.say(text)) / 16000 + 0.05
    partial = engine.decode_batch([f32(speech.say(texts[1]))], word_timestamps=False)[0]
    assert partial.text and partial.words == []


def test_noise_and_silence_decode_to_nothing(engine, speech):
    rng = np.random.default_rng(1)
    t = np.arange(48000) / 16000
    noises = [speech.silence(2.0), speech.line_noise(3.0, seed=1), speech.line_noise(3.0, seed=2),
              speech.line_noise(3.0, level_db=-25, seed=3), rng.normal(0, 2000, 48000).astype(np.int16),
              (3000 * np.sin(2 * np.pi * 60 * t)).astype(np.int16)]
    audios = [f32(n) for n in noises]
    audios += [resample(codecs.ulaw_decode(speech.telephony(n)), 8000) for n in noises]
    hyps = engine.decode_batch(audios)
    assert [h.text for h in hyps] == [""] * len(audios)
    assert all(h.rejected for h in hyps)


def test_known_hallucinations_are_gated_only_when_unsure(engine):
    assert "thank you" in HALLUCINATIONS and "thanks for watching" in HALLUCINATIONS
    unsure = engine._gate("Thanks for watching!", -0.9, 0.5)
    sure = engine._gate("Thank you.", -0.2, 0.01)
    assert unsure.text == "" and unsure.rejected == "hallucination"
    assert sure.text == "Thank you." and sure.rejected is None


def test_digit_strings_cannot_loop(engine, speech):
    text = "My card number is four one one one one one one one one one one one one one one one."
    audio = f32(speech.say(text))
    hyp = engine.decode_batch([audio])[0]
    cap = 12 * len(audio) / 16000 + 8
    assert len(engine.tokenizer.encode(" " + hyp.text)) <= cap
    assert normalize(hyp.text).count("1") <= 30


def test_repeated_copies_of_the_utterance_are_cut():
    keys = ["what", "seems", "to", "be", "the", "problem", ""] * 3 + ["what", "seems"]
    tokens = list(range(len(keys)))
    assert _cut_repeats(tokens, keys) == tokens[:7]
    digits = ["1"] * 16
    assert _cut_repeats(list(range(16)), digits) == list(range(16))
    refrain = ["no", "no", "no", "no", "no", "no"]
    assert _cut_repeats(list(range(6)), refrain) == list(range(6))


def test_offline_reference_transcribes_the_whole_file(engine, speech):
    call = speech.build_call(speech.CALL_SCRIPTS[1][:3])
    segments = engine.transcribe_offline(f32(call.tracks["agent"]))
    assert wer(call.text_of("agent"), " ".join(s.text for s in segments)) <= 0.2
    assert segments[0].start_ms >= 0 and segments[-1].end_ms <= call.duration_s * 1000 + 100


def test_model_resolution_never_downloads(tmp_path):
    bundled = resolve_model_path(None)
    assert (np.array([bundled]).size == 1) and resolve_model_path(bundled) == bundled
    with pytest.raises(ModelNotFound, match="never downloads"):
        resolve_model_path("large-v3-not-here")
    with pytest.raises(ModelNotFound, match="model.bin"):
        resolve_model_path(str(tmp_path))


def test_engine_describes_itself(engine):
    assert "tiny.en" in engine.description and engine.languages == frozenset({"en"})
