"""SIP messages (RFC 3261 §7): parse one from bytes, frame them on a stream, build responses.

No Python SIP library fits an in-process asyncio recording server (the maintained stacks bring their
own event loops or threads, the asyncio ones are dead or UA-only), so this is the small subset an
SRS needs. Header names are kept lower-cased with compact forms expanded; values as sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 65535  # what one UDP datagram holds; TCP messages are held to the same
MAX_HEADERS = 200

COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
           "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via", "x": "session-expires"}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class SipError(Exception):
    """A message that cannot be handled; `status` is the response to send when there is one to send."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []  # what the response must carry (Min-SE on 422, Unsupported on 420)


@dataclass
class SipMessage:
    method: str = ""  # requests
    uri: str = ""
    status: int = 0  # responses
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for n, v in self.headers if n == name), default)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def tokens(self, name: str) -> set[str]:
        """Comma-separated option tags of every `name` header (Require, Supported), lower-cased."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}

    @property
    def call_id(self) -> str:
        return self.get("call-id").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.get("cseq").strip().partition(" ")
        try:
            return int(number), method.strip().upper()
        except ValueError:
            raise SipError(400, "Bad CSeq") from None

    @property
    def branch(self) -> str:
        via = self.get("via").split(",")[0]
        return param(via, "branch")


def param(value: str, name: str) -> str:
    """A `;name=value` parameter of a header value (outside <...>), or ''."""
    tail = value.rsplit(">", 1)[-1]
    for part in tail.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"')
    return ""


def tag_of(value: str) -> str:
    return param(value, "tag")


def parse(data: bytes) -> SipMessage:
    """One whole message. Raises SipError(400, ...) for anything that is not one."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipError(413, "Request Entity Too Large")
    m = _HEAD_END.search(data)
    if m is None:
        raise SipError(400, "No end of headers")
    try:
        head = data[:m.start()].decode("utf-8")
    except UnicodeDecodeError:
        raise SipError(400, "Headers are not UTF-8") from None
    body = data[m.end():]
    lines = head.replace("\r\n", "\n").split("\n")
    msg = _start_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:  # folded continuation
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not _TOKEN.match(name):
            raise SipError(400, "Malformed header")
        msg.headers.append((COMPACT.get(name, name), value.strip()))
        if len(msg.headers) > MAX_HEADERS:
            raise SipError(400, "Too many headers")
    length = msg.get("content-length")
    if length:
        if not length.isdigit():
            raise SipError(400, "Bad Content-Length")
        if int(length) > len(body):
            raise SipError(400, "Truncated body")
        body = body[:int(length)]
    msg.body = body
    for required in ("via", "call-id", "cseq", "from", "to"):
        if not msg.get(required):
            raise SipError(400, f"Missing {required.title()}")
    msg.cseq  # noqa: B018 (validates)
    return msg


def _start_line(line: str) -> SipMessage:
    parts = line.strip().split(" ", 2)
    if len(parts) == 3 and parts[0] == "SIP/2.0":
        if not (parts[1].isdigit() and len(parts[1]) == 3):
            raise SipError(400, "Bad status line")
        return SipMessage(status=int(parts[1]), reason=parts[2])
    if len(parts) == 3 and parts[2] == "SIP/2.0" and _TOKEN.match(parts[0]) and parts[1]:
        return SipMessage(method=parts[0].upper(), uri=parts[1])
    raise SipError(400, "Bad request line")


def split_stream(buffer: bytearray) -> bytes | None:
    """Take one whole message off the front of a TCP stream buffer, or None until one is there.

    Keep-alive CRLFs between messages are dropped. Raises SipError when the stream cannot be framed
    (the connection is then closed)."""
    while buffer[:2] == b"\r\n":
        del buffer[:2]
    m = _HEAD_END.search(buffer)
    if m is None:
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise SipError(413, "Message Too Large")
        return None
    length = 0
    for line in bytes(buffer[:m.start()]).split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            if not value.strip().isdigit():
                raise SipError(400, "Bad Content-Length")
            length = int(value.strip())
    total = m.end() + length
    if total > MAX_MESSAGE_BYTES:
        raise SipError(413, "Message Too Large")
    if len(buffer) < total:
        return None
    data = bytes(buffer[:total])
    del buffer[:total]
    return data


def serialize(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start] + [f"{_display(n)}: {v}" for n, v in headers if n != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(req: SipMessage, status: int, reason: str, *, to_tag: str = "",
             headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    """A response to `req`: its Vias, From, Call-ID and CSeq, its To with our tag added."""
    to = req.get("to")
    if to_tag and not tag_of(to) and status > 100:
        to = f"{to};tag={to_tag}"
    out = [("via", v) for v in req.get_all("via")]
    out += [("from", req.get("from")), ("to", to), ("call-id", req.call_id), ("cseq", req.get("cseq"))]
    out += [("server", "callscribe-srs")] + (headers or [])
    return serialize(f"SIP/2.0 {status} {reason}", out, body)


_DISPLAY = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}


def _display(name: str) -> str:
    return _DISPLAY.get(name) or "-".join(p.capitalize() for p in name.split("-"))
