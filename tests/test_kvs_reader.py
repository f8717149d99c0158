"""The incremental Matroska reader and Connect's fragment layout, on streams written by the test EBML
writer (kvs_fixtures), itself checked against FFmpeg's Matroska demuxer (ffprobe)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from callscribe.ingest.kvs import connect
from callscribe.ingest.kvs.ebml import Block, ClusterStart, EbmlError, FragmentStart, MkvReader, Tag, Track
from callscribe.ingest.kvs.puller import parse_stream_arn
from kvs_fixtures import EBML_HEADER, UNKNOWN_SIZE, Fragment, el, fragments_of, simple_block, uint

RATE = 8000


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 9000).astype(np.int16)


@pytest.fixture(scope="module")
def frags() -> list[Fragment]:
    out = fragments_of({"AUDIO_FROM_CUSTOMER": tone(440, 2.6), "AUDIO_TO_CUSTOMER": tone(880, 2.2)})
    out[1].track_numbers = {"AUDIO_TO_CUSTOMER": 1, "AUDIO_FROM_CUSTOMER": 2}  # numbers vary: names count
    return out


@pytest.fixture(scope="module")
def small() -> bytes:
    """A short fragment (a few KB, every element kind) for tests that read it once per byte offset."""
    frag = fragments_of({"AUDIO_FROM_CUSTOMER": tone(440, 0.15), "AUDIO_TO_CUSTOMER": tone(880, 0.1)})[0]
    frag.block_ms = 40
    return frag.to_bytes()


def read_all(data: bytes, sizes: list[int] | None = None) -> list:
    reader, items, at = MkvReader(), [], 0
    for n in sizes or [len(data)]:
        items += reader.feed(data[at:at + n])
        at += n
    items += reader.feed(data[at:])
    return items + reader.close()


def test_items_of_a_connect_stream(frags):
    data = b"".join(f.to_bytes() for f in frags)
    items = read_all(data)
    assert sum(isinstance(i, FragmentStart) for i in items) == len(frags)
    assert [i.timecode_ms for i in items if isinstance(i, ClusterStart)] == [f.start_ms for f in frags]
    tracks = [i for i in items if isinstance(i, Track)]
    assert {(t.name, t.codec_id) for t in tracks} == {("AUDIO_FROM_CUSTOMER", "A_AAC"), ("AUDIO_TO_CUSTOMER", "A_AAC")}
    tags = [(t.name, t.value) for t in items if isinstance(t, Tag)]
    assert ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", frags[2].number) in tags
    assert ("ContactId", frags[0].contact_id) in tags and ("MimeType", "audio/L16;rate=8000;channels=1;") in tags
    events = connect.FragmentAssembler()
    got = events.feed(items) + events.close()
    ready = [e.fragment for e in got if e.kind == "ready"]
    assert [f.number for f in ready] == [f.number for f in frags]
    for made, read in zip(frags, ready):
        for name, samples in made.audio.items():
            pcm = np.concatenate([connect.pcm(p) for t, _, p in read.blocks if t == name])
            assert np.array_equal(pcm, samples), name  # PCM under A_AAC, mapped by track name
        first = {t: ms for t, ms, _ in reversed(read.blocks)}
        assert set(first.values()) == {made.start_ms}


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) is not installed")
def test_writer_and_reader_agree_with_ffprobe(frags, tmp_path):
    """FFmpeg's demuxer sees the same tracks, packets and timestamps in one fragment as the reader."""
    path = tmp_path / "fragment.mkv"
    path.write_bytes(frags[1].to_bytes())
    out = subprocess.run(["ffprobe", "-v", "quiet", "-of", "json", "-show_streams", "-show_packets", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    probe = json.loads(out.stdout)
    names = {s["index"]: s["tags"]["title"] for s in probe["streams"]}
    assert set(names.values()) == {"AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"}
    assert all(s["codec_name"] == "aac" for s in probe["streams"])  # the CodecID lie, as Connect writes it
    theirs = sorted((names[p["stream_index"]], int(p["pts"]), int(p["size"])) for p in probe["packets"])
    reader = MkvReader()
    items = reader.feed(frags[1].to_bytes()) + reader.close()
    numbers = {i.number: i.name for i in items if isinstance(i, Track)}
    ours = sorted((numbers[b.track], b.time_ms, len(b.payload)) for b in items if isinstance(b, Block))
    assert ours == theirs


def test_every_split_point_gives_the_same_items(frags, small):
    data = frags[0].to_bytes() + frags[1].to_bytes()[:300]
    whole = read_all(frags[0].to_bytes() + frags[1].to_bytes())
    one = small
    expected = read_all(one)
    assert sum(isinstance(i, Block) for i in expected) == 7
    for cut in range(1, len(one)):
        assert read_all(one, [cut]) == expected, cut
    bytewise = MkvReader()
    items = []
    for b in data:
        items += bytewise.feed(bytes([b]))
    assert items == whole[:len(items)] and len(items) > len(expected) - 12  # the next fragment began


def test_truncated_streams_raise_or_end_at_an_element_boundary(small):
    one = small
    full = read_all(one)
    raised = 0
    for cut in range(len(one)):
        reader = MkvReader()
        items = reader.feed(one[:cut])
        try:
            items += reader.close()
        except EbmlError as exc:
            assert "truncated" in str(exc)
            raised += 1
            continue
        assert items == full[:len(items)]  # only ever a prefix, at an element boundary of an unknown-size parent
    assert raised > len(one) * 0.95


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x00", "variable-size integer"),
    (b"\x1f\x43\xb6\x75\x80", "top level"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\xa3\x88\x81\x00\x00\x80\x00\x00\x00\x00", "timecode"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\x1f\x43\xb6\x75" + UNKNOWN_SIZE + uint(0xE7, 5)
     + el(0xA3, b"\x81\x00\x00\x86" + b"\x00" * 8), "laced"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\xa3\x08\xff\xff\xff\xff\xff\xff\xff", "too large"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\x16\x54\xae\x6b\x82\xae\x85", "overruns"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\x16\x54\xae\x6b" + UNKNOWN_SIZE, "unknown size"),
    (EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\x16\x54\xae\x6b\x84" + EBML_HEADER[:4], "inside"),
    (b"\x1a\x45\xdf\xa3\x84\x42\x86\x81", "truncated"),
])
def test_corrupt_input_raises_a_clear_error(data, message):
    with pytest.raises(EbmlError, match=message):
        read_all(data)


def test_tracks_by_name_and_legacy_track():
    legacy = Fragment("5", 1000, {"AUDIO_FROM_CUSTOMER": tone(300, 0.5)}, track_numbers={"AUDIO_FROM_CUSTOMER": 3})
    data = legacy.to_bytes().replace(b"AUDIO_FROM_CUSTOMER", b"Track_audio/L16\x00\x00\x00\x00")
    events = connect.FragmentAssembler().feed(read_all(data))
    frag = events[0].fragment
    assert frag.track_names() == ["AUDIO_FROM_CUSTOMER"] and len(frag.blocks) == 2
    assert [s.participant.role for s in connect.track_specs(["AUDIO_FROM_CUSTOMER", "AUDIO_TO_CUSTOMER"])] == [
        "customer", "agent"]


def test_a_fragment_is_ready_at_its_contact_id_and_a_cut_one_is_dropped(frags):
    data = frags[0].to_bytes()
    at = data.index(b"ContactId")
    assembler = connect.FragmentAssembler()
    reader = MkvReader()
    assert not assembler.feed(reader.feed(data[:at]))  # the audio is in, its contact not known yet
    assert assembler.close() == []  # cut there: nothing delivered, the resume brings it whole
    assembler, reader = connect.FragmentAssembler(), MkvReader()
    ready = assembler.feed(reader.feed(data[:at + 80]))
    assert [e.kind for e in ready] == ["ready"] and ready[0].fragment.contact_id == frags[0].contact_id
    done = assembler.feed(reader.feed(data[at + 80:])) + assembler.close()
    assert [e.kind for e in done] == ["done"]
    assert done[0].fragment.tags[connect.CONTINUATION_TOKEN] == frags[0].number


def test_an_error_tag_makes_its_own_fragment():
    data = Fragment("0", 0, {}, error=("4000", "FRAGMENT_NOT_FOUND")).to_bytes()
    events = connect.FragmentAssembler().feed(read_all(data))
    assert events[0].fragment.error == "4000 FRAGMENT_NOT_FOUND"


def test_simple_block_writer_round_trip():
    block = simple_block(2, -5, b"\x01\x00\xff\x7f")
    reader = MkvReader()
    items = reader.feed(EBML_HEADER + b"\x18\x53\x80\x67" + UNKNOWN_SIZE + b"\x1f\x43\xb6\x75" + UNKNOWN_SIZE
                        + uint(0xE7, 1000) + block) + reader.close()
    assert items[-1] == Block(2, 995, b"\x01\x00\xff\x7f")
    assert connect.pcm(items[-1].payload).tolist() == [1, 32767]


@pytest.mark.parametrize("arn, ok", [
    ("arn:aws:kinesisvideo:us-east-1:000000000000:stream/streamtest-connect-asappconnect-contact-1117e864/1654194145007",
     True),
    ("arn:aws-us-gov:kinesisvideo:us-gov-west-1:123456789012:stream/a.b_c-d/1", True),
    ("arn:aws:kinesisvideo:us-east-1:1:stream/x/1", False),
    ("arn:aws:kinesis:us-east-1:123456789012:stream/x/1", False),
    ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/x", False),
    ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/x y/1", False),
])
def test_stream_arns(arn, ok):
    if ok:
        parsed = parse_stream_arn(arn)
        assert parsed.region == arn.split(":")[3] and parsed.arn == arn
    else:
        with pytest.raises(ValueError):
            parse_stream_arn(arn)
