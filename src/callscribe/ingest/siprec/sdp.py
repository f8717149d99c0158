"""SDP offers from a SIPREC client and the recorder's answers (RFC 4566, RFC 7866 §8).

Only what a recorder needs: per m-line its port, profile, payload types with their rtpmap names,
label and direction. The answer keeps the offer's m-lines in order (RFC 3264), receive-only, with
one codec each; an m-line the recorder cannot take is answered with port 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from callscribe.ingest.siprec.message import SipError

# Codecs the recorder decodes: rtpmap name -> static payload type.
CODECS = {"PCMU": 0, "PCMA": 8}
STATIC = {0: "PCMU", 8: "PCMA", 13: "CN"}
MAX_MEDIA = 16


@dataclass
class MediaLine:
    index: int
    kind: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> upper-case encoding name
    clock: dict[int, int] = field(default_factory=dict)
    label: str = ""
    direction: str = "sendrecv"
    address: str = ""
    attributes: list[str] = field(default_factory=list)

    def codec_of(self, pt: int) -> str:
        return self.rtpmap.get(pt) or STATIC.get(pt, "")

    def choose(self) -> tuple[int, str] | None:
        """The first offered codec the recorder decodes, as (payload type, name)."""
        if self.kind != "audio" or self.port == 0 or self.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            return None
        for fmt in self.formats:
            if fmt.isdigit():
                pt = int(fmt)
                name = self.codec_of(pt)
                if name in CODECS and self.clock.get(pt, 8000) == 8000:
                    return pt, name
        return None

    def dtmf_pt(self) -> int | None:
        return next((pt for pt, name in self.rtpmap.items() if name == "TELEPHONE-EVENT"
                     and self.clock.get(pt) == 8000 and str(pt) in self.formats), None)


@dataclass
class Offer:
    media: list[MediaLine]
    address: str = ""


def parse_sdp(body: bytes) -> Offer:
    """Parse an SDP body; raises SipError(400/488) when it is not usable SDP."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SipError(400, "SDP is not UTF-8") from None
    offer = Offer([])
    current: MediaLine | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SipError(400, "Malformed m-line in SDP")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SipError(400, "Bad port in SDP")
            if len(offer.media) >= MAX_MEDIA:
                raise SipError(488, "Too many media streams")
            current = MediaLine(len(offer.media), parts[0].lower(), port, parts[2], parts[3:],
                                address=offer.address)
            offer.media.append(current)
        elif kind == "c":
            address = value.split()[-1].split("/")[0] if value.split() else ""
            if current is None:
                offer.address = address
            else:
                current.address = address
        elif kind == "a" and current is not None:
            name, _, rest = value.partition(":")
            name = name.lower()
            current.attributes.append(value)
            if name == "rtpmap":
                pt, _, enc = rest.partition(" ")
                if pt.isdigit() and int(pt) < 128:
                    codec, _, clock = enc.strip().partition("/")
                    current.rtpmap[int(pt)] = codec.upper()
                    rate = clock.split("/")[0]
                    if rate.isdigit():
                        current.clock[int(pt)] = int(rate)
            elif name == "label":
                current.label = rest.strip()
            elif name in ("sendonly", "recvonly", "sendrecv", "inactive"):
                current.direction = name
    if not offer.media:
        raise SipError(488, "No media in SDP")
    return offer


def answer(offer: Offer, ports: dict[int, int], host: str, *, session_id: int | None = None,
           version: int = 1, inactive: set[int] | frozenset[int] = frozenset()) -> bytes:
    """The answer SDP: `ports` maps an m-line index to our RTP port; other m-lines get port 0."""
    sid = session_id if session_id is not None else int(time.time())
    ip = "IP6" if ":" in host else "IP4"
    lines = ["v=0", f"o=callscribe {sid} {version} IN {ip} {host}", "s=callscribe recording", f"c=IN {ip} {host}",
             "t=0 0"]
    for m in offer.media:
        chosen = m.choose() if m.index in ports else None
        if chosen is None:
            fmt = m.formats[0] if m.formats else "0"
            lines.append(f"m={m.kind} 0 {m.proto} {fmt}")
            if m.label:
                lines.append(f"a=label:{m.label}")
            continue
        pt, name = chosen
        dtmf = m.dtmf_pt()
        fmts = [str(pt)] + ([str(dtmf)] if dtmf is not None else [])
        lines.append(f"m=audio {ports[m.index]} RTP/AVP {' '.join(fmts)}")
        lines.append(f"a=rtpmap:{pt} {name}/8000")
        if dtmf is not None:
            lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-15"]
        if m.label:
            lines.append(f"a=label:{m.label}")
        lines.append("a=inactive" if m.index in inactive or m.direction == "inactive" else "a=recvonly")
    return ("\r\n".join(lines) + "\r\n").encode()
