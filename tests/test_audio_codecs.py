"""G.711 and L16 conversions against sox, an implementation written by others."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from callscribe.audio import codecs

ALL_BYTES = bytes(range(256))
RAMP = np.arange(-32768, 32768, dtype=np.int16)


def sox(data: bytes, src: list[str], dst: list[str]) -> bytes:
    return subprocess.run(["sox", "-D", "-t", "raw", "-r", "8000", "-c", "1", *src, "-", "-t", "raw", *dst, "-"],
                          input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("enc,decode", [("mu-law", codecs.ulaw_decode), ("a-law", codecs.alaw_decode)])
def test_decode_matches_sox_for_every_byte(enc, decode):
    ref = np.frombuffer(sox(ALL_BYTES, ["-e", enc, "-b", "8"], ["-e", "signed-integer", "-b", "16"]), "<i2")
    assert np.array_equal(decode(ALL_BYTES), ref)


@pytest.mark.parametrize("enc,encode,decode", [("mu-law", codecs.ulaw_encode, codecs.ulaw_decode),
                                               ("a-law", codecs.alaw_encode, codecs.alaw_decode)])
def test_encode_agrees_with_sox_within_one_step(enc, encode, decode):
    ours = encode(RAMP)
    theirs = sox(RAMP.tobytes(), ["-e", "signed-integer", "-b", "16"], ["-e", enc, "-b", "8"])
    a, b = decode(ours).astype(int), decode(theirs).astype(int)
    # Both quantise to a G.711 level; they may differ in rounding at a level boundary only.
    step = np.abs(np.diff(np.sort(np.unique(decode(ALL_BYTES).astype(int))))).max()
    assert np.abs(a - b).max() <= step
    assert np.mean(a == b) > 0.95
    # sox decodes our bytes to what we decode them to.
    back = np.frombuffer(sox(ours, ["-e", enc, "-b", "8"], ["-e", "signed-integer", "-b", "16"]), "<i2")
    assert np.array_equal(back, decode(ours))


@pytest.mark.parametrize("encode,decode", [(codecs.ulaw_encode, codecs.ulaw_decode), (codecs.alaw_encode, codecs.alaw_decode)])
def test_every_level_round_trips(encode, decode):
    levels = decode(ALL_BYTES)
    assert np.array_equal(decode(encode(levels)), levels)
    err = np.abs(decode(encode(RAMP)).astype(int) - RAMP.astype(int))
    assert err.max() < 1100  # the largest half-step of either law


def test_l16_both_byte_orders_and_channels():
    pcm = np.array([1, -2, 300, -32768, 32767], dtype=np.int16)
    assert np.array_equal(codecs.l16_decode(codecs.l16_encode(pcm)), pcm)
    assert np.array_equal(codecs.l16_decode(codecs.l16_encode(pcm, big_endian=True), big_endian=True), pcm)
    assert codecs.l16_encode(np.array([1], np.int16), big_endian=True) == b"\x00\x01"
    stereo = codecs.l16_decode(np.array([1, 2, 3, 4, 5], "<i2").tobytes(), channels=2)
    assert stereo.tolist() == [[1, 2], [3, 4]]  # a trailing half frame is ignored
    assert np.array_equal(codecs.decode(codecs.ulaw_encode(pcm), "PCMU"), codecs.ulaw_decode(codecs.ulaw_encode(pcm)))
    with pytest.raises(ValueError):
        codecs.decode(b"", "opus")
