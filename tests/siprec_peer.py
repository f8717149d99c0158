"""SIPp as a SIPREC client (SRC) for tests: the scenario, the two-stream pcap, and running it.

SIPp's play_pcap_audio replays a pcap to the first m-line port of the SRS's answer, keeping each
packet's port offset from the lowest port in the pcap: one pcap with stream 0 to port P and
stream 1 to P+2 reaches the SRS's ports R and R+2 (media-protocols.md §3.8).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

PCAP_BASE_PORT = 6000

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="c2Vzc2lvbjEyMzQ1Njc4OQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
  </session>
  <participant participant_id="cGFydGljaXBhbnQtYS0xMjM=">
    <nameID aor="sip:+15551230001@carrier.example"><name xml:lang="en">Pat Caller</name></nameID>
  </participant>
  <participant participant_id="cGFydGljaXBhbnQtYi00NTY=">
    <nameID aor="sip:agent42@contact.example"><name xml:lang="en">Agent Sam</name></nameID>
  </participant>
  <stream stream_id="c3RyZWFtLTEtYWFhYWFhYQ==" session_id="c2Vzc2lvbjEyMzQ1Njc4OQ=="><label>1</label></stream>
  <stream stream_id="c3RyZWFtLTItYmJiYmJiYg==" session_id="c2Vzc2lvbjEyMzQ1Njc4OQ=="><label>2</label></stream>
  <participantstreamassoc participant_id="cGFydGljaXBhbnQtYS0xMjM=">
    <send>c3RyZWFtLTEtYWFhYWFhYQ==</send><recv>c3RyZWFtLTItYmJiYmJiYg==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="cGFydGljaXBhbnQtYi00NTY=">
    <send>c3RyZWFtLTItYmJiYmJiYg==</send><recv>c3RyZWFtLTEtYWFhYWFhYQ==</recv>
  </participantstreamassoc>
</recording>"""


def _sdp(direction: str) -> str:
    return "\n".join([
        "v=0", "o=src 1 [cseq] IN IP4 [local_ip]", "s=SIPREC", "c=IN IP4 [media_ip]", "t=0 0",
        "m=audio [media_port] RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=label:1", f"a={direction}",
        "m=audio [media_port+2] RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
        "a=label:2", f"a={direction}"])


def _request(cseq: int, direction: str, *, first: bool, ucid: str) -> str:
    to = "<sip:srs@[remote_ip]:[remote_port]>" + ("" if first else "[peer_tag_param]")
    return f"""
INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: {to}
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:src@[local_ip]:[local_port];transport=[transport]>;+sip.src
Max-Forwards: 70
Require: siprec
X-UCID: {ucid}
Accept: application/sdp, application/rs-metadata+xml
MIME-Version: 1.0
Content-Type: multipart/mixed;boundary=uniqueBoundary
Content-Length: [len]

--uniqueBoundary
Content-Type: application/sdp
Content-Disposition: session;handling=required

{_sdp(direction).replace("[cseq]", str(cseq))}
--uniqueBoundary
Content-Type: application/rs-metadata+xml
Content-Disposition: recording-session

{METADATA}
--uniqueBoundary--
"""


def _ack(cseq: int) -> str:
    return f"""
ACK sip:srs@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
"""


def scenario(pcap: Path, play_ms: int, ucid: str) -> str:
    """INVITE (2 m-lines + metadata), ACK, the pcap, hold (a=inactive) and resume by re-INVITE, BYE."""
    steps = [f'<send retrans="500"><![CDATA[{_request(1, "sendonly", first=True, ucid=ucid)}]]></send>',
             '<recv response="100" optional="true"/>', '<recv response="200" rrs="true"/>',
             f"<send><![CDATA[{_ack(1)}]]></send>",
             f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>',
             f'<pause milliseconds="{play_ms}"/>']
    for cseq, direction in ((2, "inactive"), (3, "sendonly")):
        steps += [f'<send retrans="500"><![CDATA[{_request(cseq, direction, first=False, ucid=ucid)}]]></send>',
                  '<recv response="100" optional="true"/>', '<recv response="200"/>',
                  f"<send><![CDATA[{_ack(cseq)}]]></send>", '<pause milliseconds="300"/>']
    steps += ["""<send retrans="500"><![CDATA[
BYE sip:srs@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 4 BYE
Max-Forwards: 70
Content-Length: 0
]]></send>""", '<recv response="200"/>']
    return '<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="siprec src">\n' + "\n".join(steps) + \
        "\n</scenario>\n"


def write_pcap(path: Path, streams: list[bytes], payload_type: int = 0) -> int:
    """A pcap of 20 ms RTP packets, stream i to port PCAP_BASE_PORT + 2i, interleaved; returns its ms."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet link type
    frames = max(len(s) for s in streams) // 160
    for n in range(frames):
        for i, stream in enumerate(streams):
            chunk = stream[n * 160:(n + 1) * 160].ljust(160, b"\xff")
            port = PCAP_BASE_PORT + 2 * i
            rtp = struct.pack("!BBHII", 0x80, payload_type | (0x80 if n == 0 else 0), n & 0xFFFF, n * 160,
                              0x1000 + i) + chunk
            udp = struct.pack("!HHHH", port, port, 8 + len(rtp), 0) + rtp
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                             socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")) + udp
            frame = b"\x00" * 12 + b"\x08\x00" + ip
            usec = n * 20000 + i * 10
            out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return frames * 20


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def run_sipp(scenario_path: Path, sip_port: int, transport: str, media_port: int, workdir: Path,
             timeout_s: int = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("sipp")
    assert exe, "SIPp is not installed (Debian package sip-tester)"
    cmd = [exe, f"127.0.0.1:{sip_port}", "-sf", str(scenario_path), "-i", "127.0.0.1", "-p", str(free_port()),
           "-mp", str(media_port), "-m", "1", "-t", "u1" if transport == "UDP" else "t1", "-nostdin",
           "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_err", "-trace_msg"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout_s + 30,
                          check=False)
