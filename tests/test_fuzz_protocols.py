"""Property-based fuzzing, with small fixed budgets, of the parsers that read bytes from the network.

Whatever arrives, a parser answers with the protocol's own errors only: never an unexpected
exception, never a 1011 "internal error". Structured strategies (the protocol's own field names
with values of any JSON type) reach past the first checks; raw bytes and text cover the rest.
"""

from __future__ import annotations

import base64
import json
import struct

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from callscribe.config import load_settings
from callscribe.ingest import audiohook_messages as audiohook
from callscribe.ingest import twilio
from callscribe.ingest.base import AdapterError, Close
from callscribe.ingest.siprec import message as sip_message
from callscribe.ingest.siprec import sdp
from callscribe.ingest.siprec.message import SipError
from callscribe.ingest.siprec.metadata import parse_metadata, split_body
from callscribe.ingest.siprec.rtp import JitterBuffer, RtpPacket, parse_rtp
from callscribe.ingest.kvs import connect as kvs_connect
from callscribe.ingest.kvs.ebml import EbmlError, MkvReader
from kvs_fixtures import Fragment, fragments_of
from servers import running_app

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
PURE_BUDGET = settings(max_examples=400, deadline=None, derandomize=True, database=None)
WIRE_BUDGET = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                       suppress_health_check=list(HealthCheck))

_SCALARS = (st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats(allow_nan=True)
            | st.text(max_size=30))
JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)


def _shaped(events: list[str], fields: list[str], nested: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """JSON text of objects that use the protocol's names, with values of any type."""
    return st.fixed_dictionaries(
        {}, optional={**{f: JSON for f in fields}, **nested}
    ).flatmap(lambda d: st.sampled_from(events).map(lambda e: {**d, **e})).map(json.dumps)


# Twilio Media Streams ------------------------------------------------------------------------

_PAYLOAD = st.binary(max_size=320).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=20)
_TWILIO_MEDIA = st.fixed_dictionaries({}, optional={"track": st.sampled_from(["inbound", "outbound", "x"]) | JSON,
                                                    "chunk": JSON, "timestamp": st.integers() | JSON,
                                                    "payload": _PAYLOAD})
_TWILIO_START = st.fixed_dictionaries({}, optional={
    "streamSid": JSON, "callSid": JSON, "accountSid": JSON,
    "tracks": st.lists(st.sampled_from(["inbound", "outbound", "both"]) | JSON, max_size=3),
    "customParameters": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | JSON, max_size=3),
    "mediaFormat": st.fixed_dictionaries({}, optional={"encoding": st.just("audio/x-mulaw") | JSON,
                                                       "sampleRate": st.just(8000) | JSON,
                                                       "channels": st.just(1) | JSON})})
TWILIO_FRAMES = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | _shaped([{"event": e} for e in ("connected", "start", "media", "dtmf", "mark", "stop", "other")],
              ["sequenceNumber", "protocol", "version", "streamSid"],
              {"media": _TWILIO_MEDIA | JSON, "start": _TWILIO_START | JSON,
               "dtmf": st.fixed_dictionaries({}, optional={"track": JSON, "digit": JSON}) | JSON,
               "mark": st.fixed_dictionaries({}, optional={"name": JSON}) | JSON,
               "stop": st.fixed_dictionaries({}, optional={"callSid": JSON, "accountSid": JSON}) | JSON})
)
TWILIO_MESSAGES = (twilio.Connected, twilio.Start, twilio.Media, twilio.Dtmf, twilio.Mark, twilio.Stop, twilio.Unknown)
TWILIO_CLOSE_CODES = {Close.UNSUPPORTED, Close.INVALID, Close.POLICY, Close.TOO_BIG}


@PURE_BUDGET
@given(frame=TWILIO_FRAMES)
def test_twilio_parse_message_answers_a_message_or_a_stream_error(frame):
    try:
        message = twilio.parse_message(frame)
    except AdapterError as exc:
        assert exc.code in TWILIO_CLOSE_CODES
        assert isinstance(exc.reason, str) and len(exc.reason.encode()) <= 123  # fits a close frame
        return
    assert isinstance(message, TWILIO_MESSAGES)


# ASAPP direct WebSocket ----------------------------------------------------------------------

ASAPP_FINAL_CODES = {"1000", "4040", "4050", "4051", "4053", "4056", "4083", "4084", "4090", "5002"}
ASAPP_VOCABULARY_CODES = {"1000", "4084", "4091"}
_START = st.fixed_dictionaries({"message": st.just("startStream")}, optional={
    "sender": st.fixed_dictionaries({}, optional={"role": st.sampled_from(["customer", "agent"]) | JSON,
                                                  "externalId": st.text(max_size=8) | JSON}) | JSON,
    "language": st.just("en-US") | JSON, "samplingRate": st.just(8000) | JSON, "encoding": st.just("L16") | JSON,
    "smartFormatting": JSON, "detailedToken": JSON, "audioRecordingAllowed": JSON,
    "redactionOutput": st.sampled_from(["redacted", "unredacted", "redacted_and_unredacted"]) | JSON})
_VOCABULARY = st.fixed_dictionaries({"message": st.just("updateVocabulary")}, optional={
    "phrases": st.lists(st.fixed_dictionaries({}, optional={"phrase": st.text(max_size=12) | JSON,
                                                            "soundsLike": st.lists(st.text(max_size=6)) | JSON,
                                                            "category": JSON}) | JSON, max_size=4) | JSON})
_VALID_START = st.fixed_dictionaries(
    {"message": st.just("startStream"),
     "sender": st.fixed_dictionaries({"role": st.sampled_from(["customer", "agent"]),
                                      "externalId": st.text(min_size=1, max_size=8)})},
    optional={"redactionOutput": st.sampled_from(["redacted", "redacted_and_unredacted"]),
              "audioRecordingAllowed": st.booleans()}).map(json.dumps)
_ANY_FRAME = (st.binary(max_size=640)
              | st.text(max_size=100)
              | (_START | _VOCABULARY | st.fixed_dictionaries({"message": JSON | st.just("finishStream")})
                 | st.dictionaries(st.text(max_size=8), JSON, max_size=3)).map(json.dumps))
# Half the streams start validly, so what follows a start (audio, vocabulary, a second start) is reached.
ASAPP_FRAMES = st.tuples(st.none() | _VALID_START, st.lists(_ANY_FRAME, max_size=4)).map(
    lambda pair: ([pair[0]] if pair[0] else []) + pair[1])


@pytest.fixture(scope="module")
def direct_server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             rate_limit_per_minute=100000)
    with running_app(settings, engine=engine) as s:
        yield s


def _stream_url(server) -> str:
    r = httpx.post(server.url + "/autotranscribe/v1/streaming-url", headers=ACME)
    assert r.status_code == 200, r.text
    return r.json()["streamingUrl"]


def test_asapp_direct_stream_answers_only_in_its_protocol(direct_server):
    @WIRE_BUDGET
    @given(frames=ASAPP_FRAMES)
    def run(frames):
        received, close_code = [], None
        with connect(_stream_url(direct_server), open_timeout=30, close_timeout=30) as ws:
            try:
                for frame in [*frames, json.dumps({"message": "finishStream"})]:
                    ws.send(frame)
            except ConnectionClosed:
                pass  # an earlier frame ended the stream; what the server sent is still to be read
            try:
                while True:
                    received.append(ws.recv(timeout=60))
            except ConnectionClosed as closed:
                close_code = closed.rcvd.code if closed.rcvd else None
        assert close_code == 1000, (close_code, received)
        for text in received:
            msg = json.loads(text)
            kind = msg["message"]
            event(kind if kind != "finalResponse" else f"finalResponse {msg['status']['code']}")
            assert kind in {"startResponse", "transcript", "vocabularyResponse", "finalResponse"}, msg
            if kind == "finalResponse":
                assert msg["status"]["code"] in ASAPP_FINAL_CODES, msg
            if kind == "vocabularyResponse":
                assert msg["status"]["code"] in ASAPP_VOCABULARY_CODES, msg
        assert json.loads(received[-1])["message"] == "finalResponse"

    run()


# Matroska (Amazon Connect Kinesis Video streams) ---------------------------------------------

_KVS_FRAGMENT = fragments_of({"AUDIO_FROM_CUSTOMER": np.arange(480, dtype=np.int16),
                              "AUDIO_TO_CUSTOMER": -np.arange(400, dtype=np.int16)})[0]
_KVS_FRAGMENT.block_ms = 20
_KVS_BYTES = _KVS_FRAGMENT.to_bytes() + Fragment("0", 0, {}, error=("4000", "x")).to_bytes()


@st.composite
def _mutated_kvs(draw) -> bytes:
    """A real Connect fragment with a few bytes overwritten, inserted or removed, or raw bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    data = bytearray(_KVS_BYTES)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 9))]
        else:
            del data[at:]
        if not data:
            break
    return bytes(data)


@PURE_BUDGET
@given(data=_mutated_kvs(), cuts=st.lists(st.integers(1, 400), max_size=6))
def test_matroska_reader_answers_items_or_its_own_error(data, cuts):
    """Whatever GetMedia sends, split anywhere: items, or EbmlError; the assembler takes any items."""
    reader, assembler, at = MkvReader(), kvs_connect.FragmentAssembler(), 0
    try:
        for n in [*cuts, len(data)]:
            assembler.feed(reader.feed(data[at:at + n]))
            at += n
        assembler.feed(reader.close())
        event("read to the end")
    except EbmlError as exc:
        assert str(exc)
        event("EbmlError")
    assembler.close()


# Genesys AudioHook -----------------------------------------------------------------------------

_AH_ID = "7c0a3a4e-3a0e-4b8e-9d8e-2f6a2f1d9b10"
_AH_DURATION = st.sampled_from(["PT0S", "PT1.25S", "PT1M2.5S", "PT2H", "PT", "P1D", "PT-1S", "PT1.S"]) | JSON
_AH_MEDIA = st.fixed_dictionaries({}, optional={
    "type": st.just("audio") | JSON, "format": st.sampled_from(["PCMU", "L16", "OPUS"]) | JSON,
    "rate": st.sampled_from([8000, 16000, 44100]) | JSON,
    "channels": st.lists(st.sampled_from(["external", "internal", "other"]), max_size=3) | JSON})
_AH_PARAMETERS = st.fixed_dictionaries({}, optional={
    "organizationId": st.just(_AH_ID) | JSON, "conversationId": st.just(_AH_ID) | JSON,
    "participant": JSON, "media": st.lists(_AH_MEDIA | JSON, max_size=3) | JSON,
    "language": st.just("en-US") | JSON, "supportedLanguages": JSON, "customConfig": JSON,
    "start": _AH_DURATION, "discarded": _AH_DURATION, "reason": JSON, "code": JSON, "message": JSON})
_AH_MESSAGE = st.fixed_dictionaries({}, optional={
    "version": st.just("2") | JSON, "id": st.just(_AH_ID) | JSON,
    "type": st.sampled_from(["open", "ping", "update", "paused", "resumed", "discarded", "error", "close",
                             "opened", "dance"]) | JSON,
    "seq": st.integers(-1, 4) | JSON, "serverseq": st.integers(-1, 4) | JSON, "position": _AH_DURATION,
    "parameters": _AH_PARAMETERS | JSON})
AUDIOHOOK_FRAMES = st.binary(max_size=200) | st.text(max_size=200) | _AH_MESSAGE.map(json.dumps)
AUDIOHOOK_CLOSE_CODES = {Close.INVALID, Close.TOO_BIG}


@PURE_BUDGET
@given(frame=AUDIOHOOK_FRAMES)
def test_audiohook_parser_answers_a_message_or_a_session_error(frame):
    try:
        msg = audiohook.parse_message(frame)
        if msg.type == "open":
            opened = audiohook.parse_open(msg.parameters)
            chosen = audiohook.select_media(opened.media)
            assert chosen is None or chosen.raw in msg.parameters["media"]
        elif msg.type in ("resumed", "discarded"):
            start, dropped = audiohook.gap_parameters(msg.parameters, msg.type)
            assert start >= 0 and dropped >= 0
    except AdapterError as exc:
        assert exc.code in AUDIOHOOK_CLOSE_CODES
        assert isinstance(exc.reason, str) and len(exc.reason.encode()) <= 123
        event("refused")
        return
    event(msg.type)


@pytest.fixture(scope="module")
def audiohook_server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             audiohook_keys="fuzz-key::acme")
    with running_app(settings, engine=engine) as s:
        yield s


def test_audiohook_session_answers_only_in_its_protocol(audiohook_server):
    """After a valid open, any frames: the server says only protocol messages and never 1011."""
    url = audiohook_server.ws_url + "/mg-autotranscribe/v1/genesys-audiohook"
    open_message = json.dumps({"version": "2", "id": _AH_ID, "type": "open", "seq": 1, "serverseq": 0,
                               "position": "PT0S", "parameters": {
                                   "organizationId": _AH_ID, "conversationId": "00000000-0000-0000-0000-000000000000",
                                   "participant": {}, "media": [{"type": "audio", "format": "PCMU",
                                                                 "channels": ["external", "internal"], "rate": 8000}]}})
    headers = {"x-api-key": "fuzz-key", "audiohook-organization-id": _AH_ID, "audiohook-session-id": _AH_ID,
               "audiohook-correlation-id": _AH_ID}

    @WIRE_BUDGET
    @given(frames=st.lists(AUDIOHOOK_FRAMES, max_size=4))
    def run(frames):
        received, close_code = [], None
        with connect(url, additional_headers=headers, open_timeout=30, close_timeout=30) as ws:
            try:
                for frame in [open_message, *frames]:
                    ws.send(frame)
            except ConnectionClosed:
                pass
            try:
                while True:
                    received.append(json.loads(ws.recv(timeout=0.5 if received else 30)))
            except TimeoutError:
                ws.close()  # the session is waiting for more, as a live one would
            except ConnectionClosed as closed:
                close_code = closed.rcvd.code if closed.rcvd else None
        assert close_code != 1011, (close_code, received)
        assert received and received[0]["type"] == "opened", received
        for msg in received:
            event(msg["type"])
            assert msg["type"] in {"opened", "pong", "updated", "event", "disconnect", "closed"}, msg
            assert msg["version"] == "2" and msg["id"] == _AH_ID
            if msg["type"] == "disconnect":
                assert msg["parameters"]["reason"] == "error" and msg["parameters"]["info"]

    run()


# SIPREC: SIP messages, bodies (multipart, RFC 7865 metadata, SDP), RTP ----------------------------

_SIP_HEADER = st.tuples(st.sampled_from(["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact",
                                         "Content-Length", "l", "Content-Type", "Require", "X-UCID", " folded"]),
                        st.text(max_size=30)).map(lambda h: f"{h[0]}: {h[1]}")
_SIP_TEXT = st.tuples(
    st.sampled_from(["INVITE sip:srs@h SIP/2.0", "BYE x SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 2 x", "ACK", ""])
    | st.text(max_size=30),
    st.lists(_SIP_HEADER, max_size=8), st.text(max_size=60),
).map(lambda t: "\r\n".join([t[0], *t[1]]) + "\r\n\r\n" + t[2])
SIP_BYTES = st.binary(max_size=600) | _SIP_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))


@PURE_BUDGET
@given(data=SIP_BYTES)
def test_sip_messages_parse_or_answer_a_sip_status(data):
    stream = bytearray(data + data)
    try:
        msg = sip_message.parse(data)
        assert msg.is_request or 100 <= msg.status <= 999
        msg.tokens("require"), msg.branch, msg.call_id  # every reader the server uses
        while sip_message.split_stream(stream) is not None:
            pass
    except SipError as exc:
        assert 400 <= exc.status < 600 and exc.reason.isprintable()


_SDP_LINE = st.one_of(
    st.sampled_from(["v=0", "c=IN IP4 127.0.0.1", "a=sendonly", "a=inactive", "a=label:1", "a=rtpmap:0 PCMU/8000",
                     "a=rtpmap:101 telephone-event/8000", "a=rtpmap:96 opus/48000/2"]),
    st.tuples(st.sampled_from(["m=audio", "m=video", "m=audio 0", "m="]),
              st.integers(-1, 70000), st.sampled_from(["RTP/AVP", "RTP/SAVP", "x"]),
              st.lists(st.sampled_from(["0", "8", "101", "96", "x", "999"]), max_size=4)).map(
        lambda m: f"{m[0]} {m[1]} {m[2]} {' '.join(m[3])}"),
    st.text(max_size=20))
SDP_BODIES = st.lists(_SDP_LINE, max_size=12).map(lambda lines: "\r\n".join(lines).encode("utf-8", "surrogatepass")) \
    | st.binary(max_size=300)


@PURE_BUDGET
@given(body=SDP_BODIES, boundary=st.sampled_from(["b", "", "x" * 80]), wrap=st.booleans(), cut=st.integers(0, 400))
def test_sdp_and_multipart_bodies_give_an_offer_or_a_sip_status(body, boundary, wrap, cut):
    ctype = f"multipart/mixed;boundary={boundary}" if wrap else "application/sdp"
    raw = (f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode() + body
           + f"\r\n--{boundary}--\r\n".encode())[:cut] if wrap else body
    try:
        for part in split_body(ctype, raw):
            offer = sdp.parse_sdp(part.body)
            ports = {m.index: 40000 + 2 * m.index for m in offer.media if m.choose() is not None}
            answer = sdp.parse_sdp(sdp.answer(offer, ports, "127.0.0.1"))
            assert len(answer.media) == len(offer.media)  # same m-lines, same order
    except SipError as exc:
        assert exc.status in (400, 488)


METADATA_XML = st.lists(st.sampled_from(
    ["<recording>", "</recording>", "<participant participant_id='p'>", "</participant>", "<send>s</send>",
     "<stream stream_id='s'><label>1</label></stream>", "<nameID aor='sip:a'>", "</nameID>", "<x:y>", "&amp;"])
    | st.text(max_size=10), max_size=12).map(lambda parts: "".join(parts).encode())


@PURE_BUDGET
@given(body=METADATA_XML | st.binary(max_size=200))
def test_recording_metadata_parses_or_answers_400(body):
    try:
        meta = parse_metadata(body)
        meta.speaker_of("1"), meta.as_dict()
    except SipError as exc:
        assert exc.status == 400


_RTP_HEADER = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535), st.integers(0, 2**32 - 1),
                        st.integers(0, 2**32 - 1)).map(lambda h: struct.pack("!BBHII", *h))


@PURE_BUDGET
@given(packets=st.lists(st.tuples(_RTP_HEADER, st.binary(max_size=200)).map(lambda p: p[0] + p[1])
                        | st.binary(max_size=200), max_size=20))
def test_rtp_packets_parse_or_are_dropped_and_leave_the_buffer_in_order(packets):
    buffer, out = JitterBuffer(), []
    for n, data in enumerate(packets):
        packet = parse_rtp(data)
        if packet is not None:
            assert len(packet.payload) <= len(data) - 12
            out += buffer.push(RtpPacket(packet.pt, packet.seq, packet.ts, 1, packet.marker, packet.payload), n * 0.1)
    out += buffer.pop(len(packets) * 0.1, flush=True)
    assert len(out) <= len(packets)
