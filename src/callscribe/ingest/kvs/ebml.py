"""An incremental Matroska (EBML) reader for the GetMedia stream of Kinesis Video Streams.

GetMedia answers with a never-ending concatenation of small Matroska files, each an EBML header and
a Segment of unknown size; chunks split them anywhere. No Python library reads unknown-size
segments incrementally (ebmlite and enzyme parse whole files, PyAV would decode the PCM that Connect
labels A_AAC), so this reads just what a consumer needs: fragment starts, track entries, simple
tags, cluster timecodes and blocks. `feed` takes any bytes and returns the items they complete;
`close` says whether the stream ended cleanly. Malformed input raises `EbmlError`, never hangs:
every element's size is bounded by its parent and leaf sizes by `MAX_LEAF_BYTES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EBML_HEADER = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067
INFO = 0x1549A966
TIMECODE_SCALE = 0x2AD7B1
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_NAME = 0x536E
CODEC_ID = 0x86
CLUSTER = 0x1F43B675
TIMECODE = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487

# Level-1 elements: one of them (or a new EBML header) ends an unknown-size Cluster.
SEGMENT_CHILDREN = frozenset({0x114D9B74, INFO, TRACKS, CLUSTER, 0x1C53BB6B, 0x1043A770, 0x1941A469, TAGS})
MASTERS = frozenset({EBML_HEADER, SEGMENT, INFO, TRACKS, TRACK_ENTRY, CLUSTER, BLOCK_GROUP, TAGS, TAG, SIMPLE_TAG})
UINTS = frozenset({TIMECODE_SCALE, TRACK_NUMBER, TIMECODE})
STRINGS = frozenset({DOC_TYPE, TRACK_NAME, CODEC_ID, TAG_NAME, TAG_STRING})
BLOCKS = frozenset({SIMPLE_BLOCK, BLOCK})
MAX_LEAF_BYTES = 1 << 20  # a Connect block is ~16 KB (1 s of 8 kHz PCM); more is corruption
MAX_DEPTH = 8


class EbmlError(ValueError):
    """The bytes are not a Matroska stream this reader can follow; the message says where."""


@dataclass(frozen=True)
class FragmentStart:
    """An EBML header: a new fragment (a new little Matroska file) begins."""

    doc_type: str = ""


@dataclass(frozen=True)
class Track:
    number: int
    name: str
    codec_id: str


@dataclass(frozen=True)
class Tag:
    name: str
    value: str


@dataclass(frozen=True)
class ClusterStart:
    timecode_ms: int


@dataclass(frozen=True)
class Block:
    track: int
    time_ms: int  # absolute: cluster timecode + block timecode, in ms
    payload: bytes


Item = FragmentStart | Track | Tag | ClusterStart | Block


@dataclass
class _Open:
    id: int
    end: int | None  # absolute stream offset, None for unknown size
    values: dict[int, int | str] = field(default_factory=dict)


def _ends_by(frame: _Open, pos: int) -> bool:
    return frame.end is not None and pos >= frame.end


def _vint(buf: bytearray, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the variable-size integer at buf[at], None if more bytes are needed.
    An all-ones size is "unknown" and returned as -1."""
    if at >= len(buf):
        return None
    first = buf[at]
    if first == 0:
        raise EbmlError("invalid variable-size integer (no length marker in the first byte)")
    length = 9 - first.bit_length()
    if at + length > len(buf):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in buf[at + 1:at + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return -1, length
    return value, length


class MkvReader:
    """Push bytes in, get parsed items out. One reader per GetMedia connection."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._at = 0  # read position in _buf
        self._skip = 0  # bytes of an ignored element still to pass over
        self._stack: list[_Open] = []
        self._scale_ns = 1_000_000
        self._cluster_tc: int | None = None

    @property
    def offset(self) -> int:
        """Bytes consumed so far (for error messages and tests)."""
        return self._base + self._at

    def feed(self, data: bytes) -> list[Item]:
        self._buf += data
        out: list[Item] = []
        try:
            self._parse(out)
        finally:
            if self._at > 65536 or self._at == len(self._buf):
                del self._buf[:self._at]
                self._base += self._at
                self._at = 0
        return out

    def close(self) -> list[Item]:
        """The stream ended: items still pending, or EbmlError if it stopped inside an element."""
        out: list[Item] = []
        if self._skip or self._at < len(self._buf) or any(o.end is not None for o in self._stack):
            raise EbmlError(f"stream truncated inside an element at byte {self.offset}")
        while self._stack:
            self._finish(self._stack.pop(), out)
        return out

    # -- parsing ----------------------------------------------------------------------------------

    def _parse(self, out: list[Item]) -> None:
        buf = self._buf
        while True:
            pos = self.offset
            while self._stack and _ends_by(self._stack[-1], pos):
                self._finish(self._stack.pop(), out)
            if self._skip:
                step = min(self._skip, len(buf) - self._at)
                self._at += step
                self._skip -= step
                if self._skip:
                    return
                continue
            head = _vint(buf, self._at, keep_marker=True)
            if head is None:
                return
            eid, id_len = head
            if id_len > 4:
                raise EbmlError(f"element id longer than 4 bytes at byte {pos}")
            size_v = _vint(buf, self._at + id_len, keep_marker=False)
            if size_v is None:
                return
            size, size_len = size_v
            header = id_len + size_len
            self._close_unknown(eid, out)
            self._check_place(eid, size, pos, header)
            if eid in MASTERS:
                if len(self._stack) >= MAX_DEPTH:
                    raise EbmlError(f"elements nested too deep at byte {pos}")
                self._at += header
                self._open(_Open(eid, None if size < 0 else pos + header + size), out)
                continue
            if size < 0:
                raise EbmlError(f"element 0x{eid:X} of unknown size at byte {pos}")
            if eid in UINTS or eid in STRINGS or eid in BLOCKS:
                if size > MAX_LEAF_BYTES:
                    raise EbmlError(f"element 0x{eid:X} of {size} bytes at byte {pos} is too large")
                if len(buf) - self._at < header + size:
                    return
                value = bytes(buf[self._at + header:self._at + header + size])
                self._at += header + size
                self._leaf(eid, value, pos, out)
                continue
            self._at += header
            self._skip = size

    def _close_unknown(self, eid: int, out: list[Item]) -> None:
        """Unknown-size Segments end at the next EBML header, Clusters also at a level-1 element."""
        while self._stack and self._stack[-1].end is None:
            top = self._stack[-1].id
            if eid == EBML_HEADER or (top == CLUSTER and eid in SEGMENT_CHILDREN):
                self._finish(self._stack.pop(), out)
            else:
                return

    def _check_place(self, eid: int, size: int, pos: int, header: int) -> None:
        if not self._stack:
            if eid not in (EBML_HEADER, SEGMENT):
                raise EbmlError(f"element 0x{eid:X} at top level at byte {pos}: not a Matroska stream")
            return
        if eid == EBML_HEADER:
            raise EbmlError(f"EBML header inside element 0x{self._stack[-1].id:X} at byte {pos}")
        if size < 0 and eid not in (SEGMENT, CLUSTER):
            raise EbmlError(f"element 0x{eid:X} of unknown size at byte {pos}")
        if eid == SEGMENT:
            raise EbmlError(f"Segment inside element 0x{self._stack[-1].id:X} at byte {pos}")
        for parent in reversed(self._stack):
            if parent.end is not None:
                if size >= 0 and pos + header + size > parent.end:
                    raise EbmlError(f"element 0x{eid:X} at byte {pos} overruns its parent")
                break

    def _open(self, frame: _Open, out: list[Item]) -> None:
        self._stack.append(frame)
        if frame.id == CLUSTER:
            self._cluster_tc = None
        elif frame.id == SEGMENT:
            self._scale_ns = 1_000_000

    def _leaf(self, eid: int, value: bytes, pos: int, out: list[Item]) -> None:
        parent = self._stack[-1] if self._stack else None
        if eid in BLOCKS:
            out.append(self._block(value, pos))
            return
        if eid in UINTS:
            if len(value) > 8:
                raise EbmlError(f"integer element 0x{eid:X} of {len(value)} bytes at byte {pos}")
            number = int.from_bytes(value, "big")
            if eid == TIMECODE and parent is not None and parent.id == CLUSTER:
                self._cluster_tc = number
                out.append(ClusterStart(number * self._scale_ns // 1_000_000))
                return
            if eid == TIMECODE_SCALE and parent is not None and parent.id == INFO:
                if number == 0:
                    raise EbmlError(f"TimecodeScale 0 at byte {pos}")
                self._scale_ns = number
                return
            if parent is not None:
                parent.values[eid] = number
            return
        text = value.rstrip(b"\x00").decode("utf-8", "replace")
        if parent is not None:
            parent.values[eid] = text

    def _block(self, value: bytes, pos: int) -> Block:
        if self._cluster_tc is None:
            raise EbmlError(f"block before its cluster's timecode at byte {pos}")
        buf = bytearray(value)
        tv = _vint(buf, 0, keep_marker=False)
        if tv is None or tv[0] < 0 or len(value) < tv[1] + 3:
            raise EbmlError(f"block header cut short at byte {pos}")
        track, n = tv
        rel = int.from_bytes(value[n:n + 2], "big", signed=True)
        if value[n + 2] & 0x06:
            raise EbmlError(f"laced block at byte {pos} (Kinesis Video does not lace)")
        time_ms = (self._cluster_tc + rel) * self._scale_ns // 1_000_000
        return Block(track, time_ms, value[n + 3:])

    def _finish(self, frame: _Open, out: list[Item]) -> None:
        v = frame.values
        if frame.id == EBML_HEADER:
            out.append(FragmentStart(str(v.get(DOC_TYPE, ""))))
        elif frame.id == TRACK_ENTRY:
            number = v.get(TRACK_NUMBER)
            if isinstance(number, int):
                out.append(Track(number, str(v.get(TRACK_NAME, "")), str(v.get(CODEC_ID, ""))))
        elif frame.id == SIMPLE_TAG:
            if TAG_NAME in v:
                out.append(Tag(str(v[TAG_NAME]), str(v.get(TAG_STRING, ""))))
        elif frame.id == CLUSTER:
            self._cluster_tc = None
