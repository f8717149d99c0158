"""The recorder's SIP and RTP behaviour at the wire, against the running app (stub speech model):
what it answers to SIPREC and other INVITEs, retransmissions, OPTIONS, BYE, re-INVITE, sources not
allowed, garbage datagrams and RTP from the wrong place; and its parsers on vendor-shaped offers."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from typing import ClassVar

import numpy as np
import pytest
from servers import wait_until
from siprec_peer import METADATA, free_port

from callscribe.ingest.siprec import sdp
from callscribe.ingest.siprec.message import SipError, parse, split_stream
from callscribe.ingest.siprec.metadata import parse_metadata, split_body
from callscribe.ingest.siprec.rtp import JitterBuffer, RtpPacket, parse_rtp

# Offers shaped like the vendors' (media-protocols.md §3.2-3.3) --------------------------------------

SDP_TWO = """v=0\r
o=- 1 1 IN IP4 127.0.0.1\r
s=-\r
c=IN IP4 127.0.0.1\r
t=0 0\r
m=audio 7000 RTP/AVP 0 8 101\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:101 telephone-event/8000\r
a=label:1\r
a=sendonly\r
m=audio 7002 RTP/AVP 8 101\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:101 telephone-event/8000\r
a=label:2\r
a=sendonly\r
"""

SONUS_METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<tns:recording xmlns:tns="urn:ietf:params:xml:ns:recording">
 <tns:datamode>complete</tns:datamode>
 <tns:session session_id="s1"><tns:sipSessionID>x</tns:sipSessionID></tns:session>
 <tns:participant participant_id="pA"><tns:nameID aor="sip:caller@a.example"/></tns:participant>
 <tns:participant participant_id="pB"><tns:nameID aor="sip:agent@b.example"><tns:name>Bea</tns:name></tns:nameID>
 </tns:participant>
 <tns:stream stream_id="st1" session_id="s1"><tns:label>1</tns:label></tns:stream>
 <tns:stream stream_id="st2" session_id="s1"><tns:label>2</tns:label></tns:stream>
 <tns:participantstreamassoc participant_id="pB"><tns:send>st1</tns:send></tns:participantstreamassoc>
 <tns:participantstreamassoc participant_id="pA"><tns:send>st2</tns:send></tns:participantstreamassoc>
</tns:recording>"""

BROADWORKS_METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
 <dataMode>complete</dataMode>
 <session id="bws1"/>
 <participant id="p1"><aor>sip:2001@bw.example</aor><name>Front Desk</name><send><id>1</id></send></participant>
 <participant id="p2"><aor>sip:+15550001111@bw.example</aor><send><id>2</id></send></participant>
</recording_metadata>"""


def multipart(*parts: tuple[str, str], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = "".join(f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n{content}\r\n" for ctype, content in parts)
    return f"multipart/mixed;boundary={boundary}", (body + f"--{boundary}--\r\n").encode()


def test_rfc7865_metadata_maps_labels_to_participants():
    meta = parse_metadata(METADATA.encode())
    assert [p.aor for p in meta.participants] == ["sip:+15551230001@carrier.example", "sip:agent42@contact.example"]
    assert meta.speaker_of("1").name == "Pat Caller" and meta.speaker_of("2").name == "Agent Sam"
    assert meta.datamode == "complete" and meta.session_ids == ["c2Vzc2lvbjEyMzQ1Njc4OQ=="]


def test_sonus_prefixed_namespace_without_version():
    meta = parse_metadata(SONUS_METADATA.encode())
    assert meta.speaker_of("1").id == "pB" and meta.speaker_of("2").aor == "sip:caller@a.example"


def test_broadworks_pre_rfc_schema():
    meta = parse_metadata(BROADWORKS_METADATA.encode())
    assert meta.speaker_of("1").name == "Front Desk" and meta.speaker_of("2").aor == "sip:+15550001111@bw.example"


def test_cisco_offer_without_metadata_and_with_an_unknown_part():
    ctype, body = multipart(("application/sdp", SDP_TWO), ("application/gtd", "IAM,\r\nPRN,isdn*,,NET5*,"))
    parts = split_body(ctype, body)
    assert [p.content_type for p in parts] == ["application/sdp", "application/gtd"]
    offer = sdp.parse_sdp(parts[0].body)
    assert [(m.port, m.label, m.choose()) for m in offer.media] == [(7000, "1", (0, "PCMU")), (7002, "2", (8, "PCMA"))]


def test_metadata_first_then_sdp_and_quoted_boundary():
    _, body = multipart(("application/rs-metadata+xml", METADATA), ("application/sdp", SDP_TWO), boundary="q")
    parts = split_body('multipart/mixed; boundary="q"', body)  # a quoted boundary names it without quotes
    assert [p.content_type for p in parts] == ["application/rs-metadata+xml", "application/sdp"]


def test_truncated_multipart_and_bad_xml_are_sip_errors():
    ctype, body = multipart(("application/sdp", SDP_TWO))
    with pytest.raises(SipError) as e:
        split_body(ctype, body[: len(body) // 2])
    assert e.value.status == 400
    for bad in (b"<recording><participant", b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', b"\xff\xfe"):
        with pytest.raises(SipError):
            parse_metadata(bad)


def test_answer_keeps_m_lines_in_order_recvonly_one_codec_and_labels():
    offer = sdp.parse_sdp((SDP_TWO + "m=video 9000 RTP/AVP 96\r\na=label:3\r\n").encode())
    text = sdp.answer(offer, {0: 40000, 1: 40002}, "127.0.0.1").decode()
    m_lines = [line for line in text.splitlines() if line.startswith("m=")]
    assert m_lines == ["m=audio 40000 RTP/AVP 0 101", "m=audio 40002 RTP/AVP 8 101", "m=video 0 RTP/AVP 96"]
    assert text.count("a=recvonly") == 2 and "a=label:1" in text and "a=label:2" in text and "a=label:3" in text


def test_unknown_codecs_srtp_and_no_audio_choose_nothing():
    offer = sdp.parse_sdp(b"v=0\r\nm=audio 7000 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n"
                          b"m=audio 7002 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n")
    assert [m.choose() for m in offer.media] == [None, None]
    with pytest.raises(SipError) as e:
        sdp.parse_sdp(b"v=0\r\ns=-\r\n")
    assert e.value.status == 488


def test_sip_parse_and_stream_framing():
    raw = (b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bK1\r\n"
           b"f: <sip:a@b>;tag=1\r\nt: <sip:srs@c>\r\ni: abc\r\nCSeq: 1 OPTIONS\r\nl: 3\r\n\r\nxyz")
    buf = bytearray(b"\r\n" + raw + raw[:20])
    one = split_stream(buf)
    assert one == raw and split_stream(buf) is None and bytes(buf) == raw[:20]
    msg = parse(one)
    assert msg.method == "OPTIONS" and msg.call_id == "abc" and msg.body == b"xyz" and msg.branch == "z9hG4bK1"


def test_jitter_buffer_reorders_and_gives_up_on_losses():
    def pkt(seq):
        return RtpPacket(0, seq & 0xFFFF, seq * 160, 1, False, b"\xff" * 160)

    jb, out = JitterBuffer(depth=3), []
    for seq in (65533, 65535, 65534, 0, 2, 3, 4, 5, 1):  # reordered across the wrap, 1 lost then late
        out += [p.seq for p in jb.push(pkt(seq), now=0.0)]
    out += [p.seq for p in jb.pop(0.0, flush=True)]
    assert out == [65533, 65534, 65535, 0, 2, 3, 4, 5]


def test_rtp_parse_header_fields_and_garbage():
    pkt = struct.pack("!BBHII", 0x90, 0x80 | 8, 7, 1234, 99) + struct.pack("!HH", 0xBEDE, 1) + b"\0" * 4 + b"\x55" * 160
    p = parse_rtp(pkt)
    assert p is not None and (p.pt, p.seq, p.ts, p.ssrc, p.marker, len(p.payload)) == (8, 7, 1234, 99, True, 160)
    assert parse_rtp(b"") is None and parse_rtp(b"\x80\xc8" + b"\0" * 30) is None  # RTCP SR
    assert parse_rtp(b"\xa0\x00" + b"\0" * 10 + b"\xff") is None  # padding longer than the packet


# At the wire ------------------------------------------------------------------------------------------


class SipClient:
    """A UDP (or TCP) SIP peer bound to `host`, for requests by hand."""

    def __init__(self, server_port: int, host: str = "127.0.0.1", tcp: bool = False):
        self.server = ("127.0.0.1", server_port)
        self.tcp = tcp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(10)
        if tcp:
            self.sock.connect(self.server)
        self.host, self.port = self.sock.getsockname()
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.server)

    def recv(self):
        if self.tcp:
            while (data := split_stream(self.buffer)) is None:
                self.buffer += self.sock.recv(65536)
            return parse(data)
        return parse(self.sock.recv(65536))

    def final(self):
        """Responses until a final one (skipping 100 Trying and any requests such as our BYE)."""
        while True:
            msg = self.recv()
            if msg.status >= 200:
                return msg

    def request(self, method: str, call_id: str, cseq: int, *, headers: str = "", ctype: str = "",
                body: bytes = b"", to_tag: str = "", contact: str = ";+sip.src", branch: str = "") -> bytes:
        transport = "TCP" if self.tcp else "UDP"
        branch = branch or f"z9hG4bK{uuid.uuid4().hex[:10]}"
        head = (f"{method} sip:srs@127.0.0.1:{self.server[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/{transport} {self.host}:{self.port};branch={branch}\r\n"
                f"From: <sip:src@{self.host}>;tag=src1\r\nTo: <sip:srs@127.0.0.1>{';tag=' + to_tag if to_tag else ''}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
                f"Contact: <sip:src@{self.host}:{self.port}>{contact}\r\n{headers}")
        if ctype:
            head += f"Content-Type: {ctype}\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def srs(start_app):
    return start_app(sip_port=free_port(), rtp_ports="43000-43099", siprec_allow="127.0.0.1/32=acme",
                     siprec_rtp_timeout_s=1.5)


def _invite(client: SipClient, call_id: str, headers: str = "", branch: str = "") -> bytes:
    ctype, body = multipart(("application/sdp", SDP_TWO), ("application/rs-metadata+xml", METADATA))
    return client.request("INVITE", call_id, 1, ctype=ctype, body=body, headers="Require: siprec\r\n" + headers,
                          branch=branch)


def _call(srs, guid: str):
    async def get():
        return srs.services.registry.get_call("acme", guid, "siprec")

    return srs.run(get())


async def _subscribe(srs, out: list) -> None:
    from callscribe.calls.events import CallStateEvent

    srs.services.bus.subscribe(lambda e: out.append(e) if isinstance(e, CallStateEvent) else None)


def rtp(seq: int, ssrc: int = 7, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, ssrc) + b"\x7f" * 160


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_invite_answer_retransmission_reinvite_and_bye(srs, tcp):
    client = SipClient(srs.settings.sip_port, tcp=tcp)
    call_id = f"call-{uuid.uuid4().hex}"
    states: list = []
    srs.run(_subscribe(srs, states))
    invite = _invite(client, call_id, headers="Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n")
    client.send(invite)
    ok = client.final()
    assert ok.status == 200 and "+sip.srs" in ok.get("contact") and ok.get("content-type") == "application/sdp"
    assert ok.get("session-expires").startswith("1800") and "timer" in ok.tokens("require")
    connected = wait_until(lambda: [e for e in states if e.state == "media-connected"], "media-connected")
    meta = connected[0].data["metadata"]["siprec"]
    assert meta["labels"] == {"0": "1", "1": "2"} and meta["call_id"] == call_id
    assert [p["name"] for p in meta["participants"]] == ["Pat Caller", "Agent Sam"]
    answer = sdp.parse_sdp(ok.body)
    ports = [m.port for m in answer.media]
    assert ports[1] == ports[0] + 2 and ports[0] % 2 == 0 and 43000 <= ports[0] <= 43099
    assert [m.label for m in answer.media] == ["1", "2"] and all(m.direction == "recvonly" for m in answer.media)
    client.send(invite)  # a retransmission gets the same answer (same To tag), not a second call
    again = client.final()
    assert again.status == 200 and again.get("to") == ok.get("to")
    to_tag = ok.get("to").rsplit("tag=", 1)[1]
    client.send(client.request("ACK", call_id, 1, to_tag=to_tag))

    view = _call(srs, call_id)  # no UCID header: the Call-ID is the call's identity
    assert view is not None and view["media"] == "connected"
    assert {t["name"] for t in view["tracks"]} == {"0", "1"}

    # RTP: garbage and a stranger's packets are dropped; the SRC's own are taken (latched).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src:
        stranger.bind(("127.0.0.2", 0))
        for n in range(5):
            stranger.sendto(rtp(n, ssrc=666), ("127.0.0.1", ports[0]))
            src.sendto(b"\x00garbage" * n, ("127.0.0.1", ports[0]))
        for n in (0, 2, 1, 3, 4, 5, 6, 7):
            src.sendto(rtp(n), ("127.0.0.1", ports[0]))
        time.sleep(0.5)

    # Metadata-only re-INVITE, then hold on both m-lines.
    client.send(client.request("INVITE", call_id, 2, to_tag=to_tag, ctype="application/rs-metadata+xml",
                               body=SONUS_METADATA.encode()))
    assert client.final().status == 200
    held = SDP_TWO.replace("a=sendonly", "a=inactive").encode()
    client.send(client.request("INVITE", call_id, 3, to_tag=to_tag, ctype="application/sdp", body=held))
    reply = client.final()
    assert reply.status == 200 and all(m.direction == "inactive" for m in sdp.parse_sdp(reply.body).media)
    assert [m.port for m in sdp.parse_sdp(reply.body).media] == ports

    client.send(client.request("UPDATE", call_id, 4, to_tag=to_tag, ctype="application/sdp", body=SDP_TWO.encode()))
    reply = client.final()  # resumed by UPDATE
    assert reply.status == 200 and all(m.direction == "recvonly" for m in sdp.parse_sdp(reply.body).media)

    client.send(client.request("BYE", call_id, 5, to_tag=to_tag))
    assert client.final().status == 200
    view = wait_until(lambda: (v := _call(srs, call_id)) and v["media"] == "ended" and v, "BYE ends the media")
    tracks = {t["name"]: t for t in view["tracks"]}
    assert tracks["0"]["received_ms"] == 8 * 20  # the SRC's 8 packets, reordered; nothing of the others
    assert (tracks["0"]["participant"], tracks["1"]["participant"]) == ("customer", "agent")
    names = [e["name"] for e in view["protocol_events"]]
    assert names.count("hold") == 2 and names.count("resume") == 2
    client.close()


def test_refusals_speak_sip(srs):
    client = SipClient(srs.settings.sip_port)
    ctype, body = multipart(("application/sdp", SDP_TWO))
    plain = client.request("INVITE", "plain-1", 1, ctype=ctype, body=body, contact="")  # neither +sip.src nor Require
    client.send(plain)
    reply = client.final()
    assert reply.status == 488 and "SIPREC" in reply.reason

    no_audio = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 9000 RTP/AVP 96\r\n"
    opus = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
    srtp = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"
    for n, (body, words) in enumerate([(no_audio, "PCMU"), (opus, "PCMU"), (srtp, "SRTP")]):
        client.send(client.request("INVITE", f"bad-{n}", 1, ctype="application/sdp", body=body))
        reply = client.final()
        assert reply.status == 488 and words in reply.reason, reply.reason
    ctype, body = multipart(("application/sdp", SDP_TWO))
    client.send(client.request("INVITE", "trunc-1", 1, ctype=ctype, body=body[:60]))
    assert client.final().status == 400
    client.send(client.request("INVITE", "ext-1", 1, ctype=ctype, body=body, headers="Require: siprec, foo\r\n"))
    reply = client.final()
    assert reply.status == 420 and reply.get("unsupported") == "foo"
    client.send(client.request("INVITE", "se-1", 1, ctype=ctype, body=body, headers="Session-Expires: 30\r\n"))
    reply = client.final()
    assert reply.status == 422 and reply.get("min-se") == "90"
    client.send(client.request("BYE", "nope", 1, to_tag="x"))
    assert client.final().status == 481
    client.send(client.request("CANCEL", "nope", 1))
    assert client.final().status == 481
    client.send(client.request("OPTIONS", "opt-1", 1))
    reply = client.final()
    assert reply.status == 200 and "siprec" in reply.get("supported") and "application/sdp" in reply.get("accept")

    outsider = SipClient(srs.settings.sip_port, host="127.0.0.2")
    outsider.send(_invite(outsider, "outsider-1"))
    assert outsider.final().status == 403
    assert _call(srs, "outsider-1") is None
    outsider.close()
    client.close()


def test_garbage_datagrams_never_stop_the_listener(srs):
    client = SipClient(srs.settings.sip_port)
    for junk in (b"", b"\r\n\r\n", b"\xff" * 2000, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n",
                 b"INVITE sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\n", b"\x80\x00" * 600):
        client.send(junk)
    tcp = socket.create_connection(("127.0.0.1", srs.settings.sip_port))
    tcp.sendall(b"garbage " * 9000 + b"\r\n\r\n")  # a stream that cannot be framed is closed
    tcp.settimeout(10)
    assert tcp.recv(100) == b""
    tcp.close()
    client.send(client.request("OPTIONS", "alive-1", 1))
    assert client.final().status == 200
    client.close()


def test_rtp_silence_ends_the_call_with_a_bye(srs):
    client = SipClient(srs.settings.sip_port)
    client.send(_invite(client, "quiet-1", headers="X-UCID: 00001234561700000001\r\n"))
    ok = client.final()
    assert ok.status == 200
    bye = None
    while bye is None:  # the watchdog's BYE, after CALLSCRIBE_SIPREC_RTP_TIMEOUT_S without RTP
        msg = client.recv()
        if msg.method == "BYE":
            bye = msg
    assert bye.call_id == "quiet-1"
    wait_until(lambda: _call(srs, "00001234561700000001")["media"] == "ended", "the call ends")
    client.close()


def test_cancel_of_an_invite_in_progress_answers_487(tmp_path):
    """A CANCEL that arrives while the call's media is being connected: 200 to the CANCEL, 487 to the
    INVITE (also to its retransmission), and the media connected meanwhile is ended."""
    from types import SimpleNamespace

    from callscribe.config import load_settings
    from callscribe.ingest.siprec.server import SiprecServer

    class Media:
        guid = "x"
        ended: ClassVar[list[str]] = []

        async def audio(self, *a, **k): ...

        async def event(self, *a): ...

        async def end(self, reason):
            self.ended.append(reason)

    gate = asyncio.Event()

    class SlowRegistry:  # holds the INVITE in progress until the test lets it go
        async def media_connected(self, **kw):
            await gate.wait()
            return Media()

    client = SipClient(free_port())  # only builds the requests
    sent: list = []
    peer = ("127.0.0.1", client.port)

    async def run():
        settings = load_settings(data_dir=tmp_path, sip_port=0, rtp_ports="43100-43199")
        server = SiprecServer(SimpleNamespace(settings=settings, registry=SlowRegistry()))
        invite = _invite(client, "cancel-1", branch="z9hG4bKcancel1")
        server.received(invite, lambda data: sent.append(parse(data)), peer, "UDP")
        while not sent:
            await asyncio.sleep(0.01)
        assert sent[0].status == 100
        server.received(client.request("CANCEL", "cancel-1", 1, branch="z9hG4bKcancel1"),
                        lambda data: sent.append(parse(data)), peer, "UDP")
        while len(sent) < 3:
            await asyncio.sleep(0.01)
        gate.set()
        while not Media.ended:
            await asyncio.sleep(0.01)
        server.received(invite, lambda data: sent.append(parse(data)), peer, "UDP")
        while len(sent) < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return server

    server = asyncio.run(asyncio.wait_for(run(), 30))
    assert sorted((m.status, m.cseq[1]) for m in sent[1:3]) == [(200, "CANCEL"), (487, "INVITE")]
    assert (sent[3].status, sent[3].cseq[1]) == (487, "INVITE") and len(sent) == 4  # never a 200
    assert Media.ended == ["cancelled"] and not server.sessions and not server.pool.used
    client.close()


@pytest.mark.parametrize("shape", ["cisco-sdp-only", "sonus-metadata-first", "broadworks-old-schema"])
def test_vendor_offers_are_recorded(srs, shape):
    """Offers as vendors send them: no `Require: siprec` (only +sip.src), SDP alone, metadata first with
    the older content type, the pre-RFC schema; each is answered 200 and named by its participants."""
    client = SipClient(srs.settings.sip_port)
    call_id = f"{shape}-{uuid.uuid4().hex[:8]}"
    if shape == "cisco-sdp-only":
        ctype, body = "application/sdp", SDP_TWO.encode()
    elif shape == "sonus-metadata-first":
        ctype, body = multipart(("application/rs-metadata", SONUS_METADATA), ("application/sdp", SDP_TWO))
    else:
        ctype, body = multipart(("application/sdp", SDP_TWO), ("application/gtd", "IAM,"),
                                ("application/rs-metadata+xml", BROADWORKS_METADATA))
    client.send(client.request("INVITE", call_id, 1, ctype=ctype, body=body))  # Contact ;+sip.src, no Require
    ok = client.final()
    assert ok.status == 200, ok.reason
    assert len(sdp.parse_sdp(ok.body).media) == 2
    names = {t["name"]: t for t in _call(srs, call_id)["tracks"]}
    assert set(names) == {"0", "1"}
    client.send(client.request("BYE", call_id, 2, to_tag=ok.get("to").rsplit("tag=", 1)[1]))
    assert client.final().status == 200
    client.close()


def test_rtp_receiver_timeline_codecs_ssrc_change_and_skipped_payloads():
    """Packets go out in order on a timeline from their RTP clock: a lost packet is a 20 ms gap, a new
    SSRC starts where it arrives; PCMA is decoded, comfort noise and unknown payloads dropped, an RFC
    4733 end packet (sent three times) is one digit."""
    from callscribe.audio.codecs import alaw_decode, alaw_encode
    from callscribe.ingest.siprec.rtp import RtpReceiver

    audio: list[tuple[int, int]] = []
    events: list[dict] = []
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    payload = alaw_encode(pcm)

    def pkt(seq, ts, ssrc=5, pt=8, body=payload):
        return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + body

    async def run():
        async def on_audio(samples, rate, at_ms):
            assert rate == 8000 and np.array_equal(samples, alaw_decode(payload))
            audio.append((at_ms, len(samples)))

        async def on_event(name, data):
            events.append({"name": name, **data})

        r = RtpReceiver({8: "PCMA"}, 101, time.monotonic(), lambda ip: ip == "127.0.0.1", on_audio, on_event)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: r, local_addr=("127.0.0.1", 0))
        src = ("127.0.0.1", 7000)
        for seq, ts in ((10, 1600), (12, 1920), (11, 1760), (14, 2240)):  # 13 lost, 11 late
            r.datagram_received(pkt(seq, ts), src)
        r.datagram_received(pkt(15, 2400, pt=13, body=b"\x40"), src)  # comfort noise
        r.datagram_received(pkt(16, 2400, pt=18), src)  # G.729: not agreed
        r.datagram_received(pkt(17, 2400), ("127.0.0.9", 7000))  # another source
        for _ in range(3):
            r.datagram_received(pkt(18, 2560, pt=101, body=bytes([5, 0x80 | 10, 0, 160])), src)
        r.datagram_received(pkt(1, 999_000, ssrc=6), src)  # a new SSRC, far-off timestamp
        await r.close()
        return r

    r = asyncio.run(asyncio.wait_for(run(), 10))
    assert [n for _, n in audio] == [160] * 5
    at = [a for a, _ in audio]
    assert [b - at[0] for b in at[:4]] == [0, 20, 40, 80]  # in order; the lost packet is a gap
    assert abs(at[4] - at[0]) < 1000  # the new SSRC lands where it arrived, not 124 s on
    assert events == [{"name": "dtmf", "digit": "5"}]
    assert r.dropped == 3


def test_sip_over_tls(start_app, tmp_path):
    """With CALLSCRIBE_SIP_TLS_CERT/_KEY set, a recording session over TLS on the TLS port."""
    import shutil
    import ssl
    import subprocess

    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed"
    cert, key = tmp_path / "srs.pem", tmp_path / "srs.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls_port = free_port()
    app = start_app(sip_port=free_port(), sip_tls_port=tls_port, sip_tls_cert=cert, sip_tls_key=key,
                    rtp_ports="43200-43299", siprec_allow="127.0.0.1/32=acme")
    client = SipClient(tls_port, tcp=True)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    client.sock = context.wrap_socket(client.sock)
    call_id = f"tls-{uuid.uuid4().hex[:8]}"
    client.send(_invite(client, call_id).replace(b"SIP/2.0/TCP", b"SIP/2.0/TLS"))
    ok = client.final()
    assert ok.status == 200 and f":{tls_port};transport=tls>" in ok.get("contact")
    assert _call(app, call_id)["media"] == "connected"
    client.send(client.request("BYE", call_id, 2, to_tag=ok.get("to").rsplit("tag=", 1)[1]))
    assert client.final().status == 200
    client.close()
