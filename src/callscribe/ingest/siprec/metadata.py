"""The body of a SIPREC INVITE: multipart/mixed parts (RFC 2046) and RFC 7865 recording metadata.

Metadata is read by local element names, whatever the namespace or prefix (the RFC's `:1`
namespace, Sonus's namespace without it, BroadWorks' pre-RFC `recording_metadata` schema), so a
vendor's variant costs nothing. Metadata is optional (Cisco sends none).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from callscribe.ingest.siprec.message import SipError

MAX_PARTS = 16


@dataclass
class Part:
    content_type: str  # lower-case media type without parameters
    body: bytes


@dataclass
class MetaParticipant:
    id: str
    aor: str = ""
    name: str = ""
    sends: list[str] = field(default_factory=list)  # stream ids (or labels, in the old schema)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "aor": self.aor, "name": self.name, "sends": self.sends}


@dataclass
class Metadata:
    participants: list[MetaParticipant] = field(default_factory=list)
    stream_labels: dict[str, str] = field(default_factory=dict)  # stream id -> label
    session_ids: list[str] = field(default_factory=list)
    datamode: str = ""

    def speaker_of(self, label: str) -> MetaParticipant | None:
        """The participant who sends the stream with this m-line label."""
        for p in self.participants:
            for sent in p.sends:
                if sent == label or self.stream_labels.get(sent) == label:
                    return p
        return None

    def as_dict(self) -> dict[str, object]:
        return {"participants": [p.as_dict() for p in self.participants], "streams": self.stream_labels,
                "sessions": self.session_ids, "datamode": self.datamode}


def media_type(value: str) -> str:
    return value.split(";")[0].strip().lower()


def _content_param(value: str, name: str) -> str:
    for part in value.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"')
    return ""


def split_body(content_type: str, body: bytes) -> list[Part]:
    """The parts of a body: a multipart/mixed body's parts, or the body itself."""
    kind = media_type(content_type)
    if not kind.startswith("multipart/"):
        return [Part(kind, body)] if body else []
    boundary = _content_param(content_type, "boundary")
    if not boundary or len(boundary) > 70:
        raise SipError(400, "multipart body without a usable boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise SipError(400, "Truncated multipart body")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = chunk.lstrip(b"\n").partition(b"\n\n")
        if not sep:
            continue  # a part with no header/body separator carries nothing usable
        ctype = "text/plain"
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                ctype = value.strip()
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        parts.append(Part(media_type(ctype), content))
        if len(parts) > MAX_PARTS:
            raise SipError(400, "Too many body parts")
    else:
        raise SipError(400, "Truncated multipart body")
    return parts


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower() if isinstance(tag, str) else ""


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _attr(el: ET.Element, *names: str) -> str:
    for key, value in el.attrib.items():
        if _local(key) in names:
            return value.strip()
    return ""


def parse_metadata(body: bytes) -> Metadata:
    """RFC 7865 metadata (any namespace) -> participants, streams, sessions. Raises SipError(400)."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SipError(400, "Metadata with a DTD is not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise SipError(400, "Metadata is not well-formed XML") from None
    meta = Metadata()
    people: dict[str, MetaParticipant] = {}
    for el in root.iter():
        name = _local(el.tag)
        if name == "datamode":
            meta.datamode = _text(el)
        elif name == "session":
            sid = _attr(el, "session_id", "id")
            if sid:
                meta.session_ids.append(sid)
        elif name == "stream":
            sid = _attr(el, "stream_id", "id")
            label = _text(_child(el, "label"))
            if sid and label:
                meta.stream_labels[sid] = label
        elif name == "participant":
            pid = _attr(el, "participant_id", "id")
            if not pid:
                continue
            p = people.setdefault(pid, MetaParticipant(pid))
            name_id = _child(el, "nameid")
            if name_id is not None:
                p.aor = p.aor or _attr(name_id, "aor")
                p.name = p.name or _text(_child(name_id, "name"))
            p.aor = p.aor or _text(_child(el, "aor"))  # the pre-RFC schema
            p.name = p.name or _text(_child(el, "name"))
            for send in (c for c in el if _local(c.tag) == "send"):  # pre-RFC: <send><id>..</id></send>
                p.sends += [_text(i) for i in send if _local(i.tag) == "id"] or [_text(send)]
        elif name == "participantstreamassoc":
            pid = _attr(el, "participant_id", "id")
            if pid:
                p = people.setdefault(pid, MetaParticipant(pid))
                p.sends += [_text(c) for c in el if _local(c.tag) == "send" and _text(c)]
    meta.participants = list(people.values())
    return meta
