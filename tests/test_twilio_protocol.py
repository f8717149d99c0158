"""Twilio Media Streams protocol layer, without sockets: frames built by streamdouble's encoder (a
Twilio simulator written by others) go through `TwilioStream` into a recording registry."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamdouble.protocol import MediaStreamEncoder, StreamIdentity

from callscribe.audio.codecs import ulaw_decode
from callscribe.calls.media import MediaRefused
from callscribe.ingest.base import AdapterError as StreamError
from callscribe.ingest.base import Close, TrackTimeline
from callscribe.ingest.twilio import MAX_MESSAGE_BYTES, TwilioStream, parse_message

CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER, CLOSE_UNSUPPORTED = (
    Close.POLICY, Close.TOO_BIG, Close.TRY_LATER, Close.UNSUPPORTED)


class RecordingCall:
    def __init__(self, guid: str):
        self.guid = guid
        self.frames: list[tuple[str, np.ndarray, int, int | None]] = []
        self.events: list[tuple[str, dict]] = []
        self.ends: list[str] = []

    async def audio(self, track, pcm, sample_rate, timestamp_ms=None):
        self.frames.append((track, np.array(pcm), sample_rate, timestamp_ms))

    async def event(self, name, data):
        self.events.append((name, data))

    async def end(self, reason):
        self.ends.append(reason)

    def track(self, name: str) -> list[tuple[np.ndarray, int | None]]:
        return [(pcm, ts) for t, pcm, _, ts in self.frames if t == name]


class RecordingRegistry:
    def __init__(self, refuse: MediaRefused | None = None):
        self.connections: list[dict] = []
        self.calls: list[RecordingCall] = []
        self.refuse = refuse

    async def media_connected(self, **kwargs):
        if self.refuse is not None:
            raise self.refuse
        self.connections.append({**kwargs, "tracks": [t.name for t in kwargs["tracks"]],
                                 "participants": {t.name: t.participant.id for t in kwargs["tracks"]}})
        self.calls.append(RecordingCall(kwargs["guid"]))
        return self.calls[-1]


def frame(rng: np.random.Generator) -> bytes:
    return rng.integers(0, 256, 160, dtype=np.uint8).tobytes()


def dumps(msg: dict) -> str:
    return json.dumps(msg)


def new_stream(registry=None, tenant: str | None = "acme", **kw) -> tuple[TwilioStream, RecordingRegistry]:
    registry = registry or RecordingRegistry()
    return TwilioStream(registry, tenant=tenant, source="127.0.0.1:5000", **kw), registry


async def feed(stream: TwilioStream, *messages: dict | str) -> bool:
    done = False
    for msg in messages:
        done = await stream.receive(msg if isinstance(msg, str) else dumps(msg))
    return done


def start_msg(enc: MediaStreamEncoder, **kw) -> dict:
    return enc.start(tracks=kw.pop("tracks", ["inbound", "outbound"]), **kw)


async def test_full_message_set_two_tracks():
    rng = np.random.default_rng(1)
    enc = MediaStreamEncoder(StreamIdentity(call_sid="CA" + "1" * 32))
    stream, registry = new_stream()
    inbound = [frame(rng) for _ in range(5)]
    outbound = [frame(rng) for _ in range(5)]
    messages: list[dict | str] = [enc.connected(), start_msg(enc, custom_parameters={"token": "secret", "x": "y"})]
    for a, b in zip(outbound, inbound):  # streamdouble's fork order: agent frame, then caller frame
        messages += [enc.media(a, track="outbound"), enc.media(b, track="inbound")]
    messages += [enc.dtmf("5"), enc.mark("m1"), dumps({"event": "futureThing", "futureThing": {"a": 1}})]
    assert await feed(stream, *messages) is False
    assert await feed(stream, enc.stop()) is True

    (conn,) = registry.connections
    assert conn["tenant"] == "acme" and conn["namespace"] == "twilio"
    assert conn["guid"] == "CA" + "1" * 32
    assert conn["tracks"] == ["inbound", "outbound"]
    assert conn["metadata"]["customParameters"] == {"x": "y"}  # the token never reaches the registry
    call = registry.calls[0]
    for name, sent in (("inbound", inbound), ("outbound", outbound)):
        got = call.track(name)
        assert [ts for _, ts in got] == [None] * 5  # contiguous: no gaps reported
        np.testing.assert_array_equal(np.concatenate([p for p, _ in got]), ulaw_decode(b"".join(sent)))
    assert {rate for *_, rate, _ in call.frames} == {8000}
    assert call.events == [("dtmf", {"digit": "5", "track": "inbound"}), ("mark", {"name": "m1"})]
    assert call.ends == ["stop"]
    assert stream.stats.unknown_events == 1
    # After stop nothing more reaches the call, and end stays idempotent.
    assert await feed(stream, dumps({"event": "media"})) is True
    await stream.end("closed")
    assert call.ends == ["stop"]


async def test_guid_parameter_names_the_call():
    enc = MediaStreamEncoder()
    stream, registry = new_stream()
    await feed(stream, enc.connected(), start_msg(enc, custom_parameters={"guid": "00002542391662063156"}))
    assert registry.connections[0]["guid"] == "00002542391662063156"
    assert registry.connections[0]["metadata"]["callSid"] == enc.identity.call_sid


async def test_numbers_as_strings_or_numbers_and_missing_connected():
    stream, registry = new_stream()
    payload = base64.b64encode(b"\xff" * 160).decode()
    await feed(
        stream,
        {"event": "start", "sequenceNumber": 1, "streamSid": "MZ1",
         "start": {"callSid": "CA1", "streamSid": "MZ1", "tracks": ["inbound_track"],
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": 1}}},
        {"event": "media", "sequenceNumber": "2", "media": {"track": "inbound", "chunk": 1, "timestamp": 0, "payload": payload}},
        {"event": "media", "sequenceNumber": 3, "media": {"chunk": "2", "timestamp": "20", "payload": payload}},
    )
    call = registry.calls[0]
    assert registry.connections[0]["tracks"] == ["inbound"]
    assert [ts for _, ts in call.track("inbound")] == [None, None]


def test_timeline_gaps_jitter_and_overlap():
    t = TrackTimeline(8000)
    assert t.place(0, 160) == (0, None)
    assert t.place(20, 160) == (0, None)
    assert t.place(47, 160) == (0, None)  # 7 ms late: jitter, still contiguous
    assert t.samples == 480
    assert t.place(100, 160) == (0, 100)  # 40 ms lost: the registry skips the gap
    assert t.samples == 960
    assert t.place(100, 160) == (160, None)  # a replayed frame is dropped whole
    assert t.place(105, 160) == (120, None)  # 15 ms of it overlap what the track has
    assert t.samples == 1000
    assert t.place(None, 160) == (0, None)
    with pytest.raises(StreamError):
        t.place(10_000_000, 160)


async def test_tracks_have_their_own_timelines():
    """Outbound starts two seconds late and inbound loses a frame: each track's gap is its own."""
    rng = np.random.default_rng(2)
    enc = MediaStreamEncoder()
    stream, registry = new_stream()
    await feed(stream, enc.connected(), start_msg(enc))

    def media(track: str, ts: int) -> str:
        return dumps({"event": "media", "sequenceNumber": "9", "streamSid": "MZ",
                      "media": {"track": track, "chunk": "1", "timestamp": str(ts),
                                "payload": base64.b64encode(frame(rng)).decode()}})

    await feed(stream, media("inbound", 0), media("inbound", 20), media("outbound", 2000),
               media("inbound", 60), media("outbound", 2020))
    call = registry.calls[0]
    assert [ts for _, ts in call.track("inbound")] == [None, None, 60]
    assert [ts for _, ts in call.track("outbound")] == [2000, None]


BAD_AFTER_START = [
    pytest.param(b"\x00\x01", CLOSE_UNSUPPORTED, id="binary"),
    pytest.param("not json", 1007, id="not-json"),
    pytest.param("[1, 2]", 1007, id="json-array"),
    pytest.param('{"no": "event"}', 1007, id="no-event"),
    pytest.param('{"event": 7}', 1007, id="event-not-string"),
    pytest.param('{"event": "media", "media": "x"}', 1007, id="media-not-object"),
    pytest.param('{"event": "media", "media": {"track": "inbound", "timestamp": "abc", "payload": ""}}', 1007, id="timestamp-not-number"),
    pytest.param('{"event": "media", "media": {"track": "inbound", "timestamp": true, "payload": ""}}', 1007, id="timestamp-bool"),
    pytest.param('{"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": "%%%notbase64"}}', 1007, id="bad-base64"),
    pytest.param('{"event": "media", "media": {"track": "inbound", "timestamp": "0", "payload": 5}}', 1007, id="payload-not-string"),
    pytest.param('{"event": "media", "media": {"track": "sideways", "timestamp": "0", "payload": ""}}', CLOSE_POLICY, id="unknown-track"),
    pytest.param('{"event": "dtmf", "dtmf": {"digit": 1}}', 1007, id="dtmf-digit-number"),
    pytest.param("x" * (MAX_MESSAGE_BYTES + 1), CLOSE_TOO_BIG, id="oversized"),
    pytest.param("__second_start__", CLOSE_POLICY, id="second-start"),
]


@pytest.mark.parametrize("bad,code", BAD_AFTER_START)
async def test_bad_frames_raise_stream_error(bad, code):
    enc = MediaStreamEncoder()
    stream, registry = new_stream()
    await feed(stream, enc.connected(), start_msg(enc, tracks=["inbound"]))
    if bad == "__second_start__":
        bad = json.dumps({**start_msg(MediaStreamEncoder())})
    with pytest.raises(StreamError) as err:
        await stream.receive(bad)
    assert err.value.code == code and err.value.reason
    await stream.end("protocol error")
    assert registry.calls[0].ends == ["protocol error"]


@pytest.mark.parametrize("fmt", [
    {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    None,
], ids=["alaw", "16k", "stereo", "missing"])
async def test_wrong_media_format_is_refused_before_the_registry(fmt):
    enc = MediaStreamEncoder()
    msg = start_msg(enc)
    if fmt is None:
        del msg["start"]["mediaFormat"]
    else:
        msg["start"]["mediaFormat"] = fmt
    stream, registry = new_stream()
    with pytest.raises(StreamError, match="mediaFormat"):
        await feed(stream, enc.connected(), msg)
    assert registry.connections == []


@pytest.mark.parametrize("event", ["media", "dtmf", "mark"])
async def test_events_before_start(event):
    enc = MediaStreamEncoder()
    enc.start()  # lets the encoder build a media frame; the stream never sees this start
    built = {"media": lambda: enc.media(b"\xff" * 160), "dtmf": lambda: enc.dtmf("1"), "mark": lambda: enc.mark("m")}[event]()
    stream, registry = new_stream()
    with pytest.raises(StreamError, match="before 'start'") as err:
        await feed(stream, MediaStreamEncoder().connected(), built)
    assert err.value.code == CLOSE_POLICY
    await stream.end("protocol error")  # nothing to end: no call was ever connected
    assert registry.connections == []


async def test_refusals_and_tokens_from_parameters():
    enc = MediaStreamEncoder()
    stream, _ = new_stream(RecordingRegistry(MediaRefused("busy", capacity=True)))
    with pytest.raises(StreamError) as err:
        await feed(stream, enc.connected(), start_msg(enc))
    assert err.value.code == CLOSE_TRY_LATER

    async def resolve(params):
        return "beta" if params.get("token") == "good" else None

    enc = MediaStreamEncoder()
    stream, registry = new_stream(tenant=None, resolve_tenant=resolve)
    await feed(stream, enc.connected(), start_msg(enc, custom_parameters={"token": "good"}))
    assert registry.connections[0]["tenant"] == "beta"

    enc = MediaStreamEncoder()
    stream, registry = new_stream(tenant=None, resolve_tenant=resolve)
    with pytest.raises(StreamError, match="token") as err:
        await feed(stream, enc.connected(), start_msg(enc, custom_parameters={"token": "forged"}))
    assert err.value.code == CLOSE_POLICY and registry.connections == []


def test_parse_message_tolerates_extra_fields():
    msg = parse_message(json.dumps({"event": "mark", "sequenceNumber": "4", "mark": {"name": "a", "extra": 1}, "new": True}))
    assert msg.name == "a"
    assert parse_message('{"event": "stop"}').call_sid is None
