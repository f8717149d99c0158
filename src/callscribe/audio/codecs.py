"""G.711 (mu-law, A-law) and L16 conversions with numpy lookup tables.

Decoding is one table lookup per byte; encoding is one lookup per int16 value (a 64 K table built
once), so a 20 ms telephony frame costs a few microseconds either way. The tables follow the ITU
G.711 reference (Sun's g711.c), which is what sox and the telephony world use.
"""

from __future__ import annotations

import numpy as np

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _ulaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = np.searchsorted(_SEG_UEND, mag)  # first segment whose end >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag)
    low = np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | low)
    return (code ^ mask).astype(np.uint8)


ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
ULAW_ENCODE = _ulaw_encode_table()  # index: int16 value + 32768
ALAW_ENCODE = _alaw_encode_table()


def _as_u8(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False)
    return np.frombuffer(data, dtype=np.uint8)


def ulaw_decode(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """mu-law bytes -> int16 samples."""
    return ULAW_DECODE[_as_u8(data)]


def alaw_decode(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A-law bytes -> int16 samples."""
    return ALAW_DECODE[_as_u8(data)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes."""
    return ULAW_ENCODE[pcm.astype(np.int32) + 32768].tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes."""
    return ALAW_ENCODE[pcm.astype(np.int32) + 32768].tobytes()


def l16_decode(data: bytes | bytearray | memoryview, *, big_endian: bool = False, channels: int = 1) -> np.ndarray:
    """Linear 16-bit PCM bytes -> int16 samples; (n, channels) when channels > 1.

    RTP L16 (RFC 3551) is big-endian; WebSocket APIs and WAV are little-endian.
    """
    usable = len(data) - len(data) % (2 * channels)
    pcm = np.frombuffer(memoryview(data)[:usable], dtype=">i2" if big_endian else "<i2").astype(np.int16)
    return pcm.reshape(-1, channels) if channels > 1 else pcm


def l16_encode(pcm: np.ndarray, *, big_endian: bool = False) -> bytes:
    """int16 samples -> linear 16-bit PCM bytes."""
    return np.asarray(pcm, dtype=">i2" if big_endian else "<i2").tobytes()


def int16_to_float32(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) * (1.0 / 32768.0)


def float32_to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def decode(data: bytes, encoding: str) -> np.ndarray:
    """Decode by name: "mulaw"/"pcmu"/"ulaw", "alaw"/"pcma", "l16" (little-endian), "l16be"."""
    name = encoding.lower().replace("-", "").replace("_", "")
    if name in ("mulaw", "ulaw", "pcmu", "g711u", "audiox-mulaw"):
        return ulaw_decode(data)
    if name in ("alaw", "pcma", "g711a"):
        return alaw_decode(data)
    if name in ("l16", "linear16", "pcm16", "s16le"):
        return l16_decode(data)
    if name in ("l16be", "s16be"):
        return l16_decode(data, big_endian=True)
    raise ValueError(f"unknown audio encoding {encoding!r}")
