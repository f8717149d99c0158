"""Amazon Connect's Kinesis Video stream, made here: a small EBML writer that lays out fragments the
way Connect and GetMedia do (media-protocols.md §4.3: an EBML header and an unknown-size Segment per
fragment, PCM s16le 8 kHz under CodecID A_AAC, AWS_* tags before the Cluster and one Tags element per
Connect tag after it), and a local Kinesis Video endpoint serving GetDataEndpoint and GetMedia (chunked,
from any start selector, optionally cutting a connection mid-fragment) that the real boto3 client
reaches through endpoint settings.

The writer is checked against ffprobe (FFmpeg's Matroska demuxer, written by others) in test_kvs_reader.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
RATE = 8000


def _id_bytes(eid: int) -> bytes:
    return eid.to_bytes((eid.bit_length() + 7) // 8, "big")


def size_vint(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big") if length < 8 else (
                b"\x01" + n.to_bytes(7, "big"))
    raise ValueError(n)


def el(eid: int, payload: bytes) -> bytes:
    return _id_bytes(eid) + size_vint(len(payload)) + payload


def uint(eid: int, value: int) -> bytes:
    return el(eid, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def text(eid: int, value: str) -> bytes:
    return el(eid, value.encode())


def simple_tag(name: str, value: str) -> bytes:
    return el(0x67C8, text(0x45A3, name) + text(0x4487, value))


def tags(*pairs: tuple[str, str]) -> bytes:
    return el(0x1254C367, el(0x7373, el(0x63C0, b"") + b"".join(simple_tag(n, v) for n, v in pairs)))


EBML_HEADER = el(0x1A45DFA3, uint(0x4286, 1) + uint(0x42F7, 1) + uint(0x42F2, 4) + uint(0x42F3, 8)
                 + text(0x4282, "matroska") + uint(0x4287, 2) + uint(0x4285, 2))


def track_entry(number: int, name: str) -> bytes:
    audio = el(0xE1, el(0xB5, np.array([RATE], ">f8").tobytes()) + uint(0x9F, 1) + uint(0x6264, 16))
    return el(0xAE, uint(0xD7, number) + uint(0x73C5, number) + uint(0x83, 2) + text(0x536E, name)
              + text(0x86, "A_AAC") + el(0x63A2, b"\x15\x88\x56\xe5\xa5\x48\x80") + audio)


def simple_block(track: int, rel_ms: int, pcm: bytes) -> bytes:
    return el(0xA3, bytes([0x80 | track]) + rel_ms.to_bytes(2, "big", signed=True) + b"\x80" + pcm)


@dataclass
class Fragment:
    number: str
    start_ms: int  # absolute producer time of its first sample (epoch ms)
    audio: dict[str, np.ndarray]  # Connect track name -> int16 samples at 8 kHz
    contact_id: str = "c0ffee00-0000-4000-8000-000000000001"
    track_numbers: dict[str, int] = field(default_factory=lambda: {"AUDIO_FROM_CUSTOMER": 1, "AUDIO_TO_CUSTOMER": 2})
    block_ms: int = 250
    error: tuple[str, str] | None = None  # (AWS_KINESISVIDEO_ERROR_CODE, _ID): an error fragment

    @property
    def duration_ms(self) -> int:
        return max((len(a) * 1000 // RATE for a in self.audio.values()), default=0)

    def to_bytes(self, millis_behind: int = 1200) -> bytes:
        if self.error is not None:
            return EBML_HEADER + _id_bytes(0x18538067) + UNKNOWN_SIZE + tags(
                ("AWS_KINESISVIDEO_ERROR_CODE", self.error[0]), ("AWS_KINESISVIDEO_ERROR_ID", self.error[1]))
        info = el(0x1549A966, el(0x73A4, bytes(range(16))) + uint(0x2AD7B1, 1_000_000)
                  + text(0x7BA9, "Kinesis Video SDK") + text(0x4D80, "Kinesis Video SDK 1.0")
                  + text(0x5741, "Kinesis Video SDK 1.0"))
        tracks = el(0x1654AE6B, b"".join(track_entry(n, name) for name, n in sorted(
            self.track_numbers.items(), key=lambda kv: kv[1]) if name in self.audio))
        server_ts = f"{self.start_ms / 1000 - 0.9:.3f}"
        aws_tags = tags(("AWS_KINESISVIDEO_FRAGMENT_NUMBER", self.number),
                        ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", server_ts),
                        ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", f"{self.start_ms / 1000:.3f}"))
        blocks = []
        step = RATE * self.block_ms // 1000
        for at in range(0, max(len(a) for a in self.audio.values()), step):
            for name, samples in self.audio.items():  # both tracks interleaved, as Connect writes them
                chunk = samples[at:at + step]
                if len(chunk):
                    blocks.append(simple_block(self.track_numbers[name], at * 1000 // RATE,
                                               chunk.astype("<i2").tobytes()))
        cluster = _id_bytes(0x1F43B675) + UNKNOWN_SIZE + uint(0xE7, self.start_ms) + uint(0xA7, 0) + b"".join(blocks)
        after = [tags(("ContactId", self.contact_id)), tags(("InstanceId", "1d2c3b4a-0000-4000-8000-00000000abcd")),
                 tags(("MimeType", "audio/L16;rate=8000;channels=1;"))]
        after += [tags((name, str(n))) for name, n in self.track_numbers.items() if name in self.audio]
        after += [tags(("Events", "[]")), tags(("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", str(millis_behind)),
                                            ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", self.number))]
        return EBML_HEADER + _id_bytes(0x18538067) + UNKNOWN_SIZE + info + tracks + aws_tags + cluster + b"".join(after)


def fragments_of(tracks: dict[str, np.ndarray], *, first_number: int = 91343852333181476958523476930058290730435475343,
                 start_ms: int = 1726677688724, fragment_ms: int = 1000,
                 contact_id: str = "c0ffee00-0000-4000-8000-000000000001") -> list[Fragment]:
    """Cut 8 kHz tracks (Connect names) into ~1 s fragments numbered as KVS does (increasing)."""
    n = max(len(a) for a in tracks.values())
    step = RATE * fragment_ms // 1000
    out = []
    for i, at in enumerate(range(0, n, step)):
        out.append(Fragment(str(first_number + 7 * i), start_ms + at * 1000 // RATE,
                            {name: a[at:at + step] for name, a in tracks.items() if len(a[at:at + step])},
                            contact_id=contact_id))
    return out


class KinesisVideoEndpoint:
    """A local stand-in for the two Kinesis Video APIs a consumer calls (control plane and media).

    `streams`: ARN -> fragments. GetMedia answers chunked Matroska from the start selector, `speed`
    times faster than real time, then holds the connection open (as KVS does at the stream's head)
    for `hold_s` and ends it. `cut_at`: byte offsets (one per connection, in order) at which a
    connection is dropped without finishing the chunked body. Every GetMedia request is kept.
    """

    def __init__(self, streams: dict[str, list[Fragment]], *, speed: float = 4.0, chunk: int = 997,
                 hold_s: float = 0.5, cut_at: list[int] | None = None):
        self.streams = streams
        self.speed = speed
        self.chunk = chunk
        self.hold_s = hold_s
        self.cut_at = list(cut_at or [])
        self.requests: list[dict] = []
        self.sent: list[str] = []  # fragment numbers whose last byte went out
        self.closed = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if self.path == "/getDataEndpoint":
                    if body.get("StreamARN") not in endpoint.streams:
                        return self._error(404, "ResourceNotFoundException", "stream not found")
                    return self._json({"DataEndpoint": endpoint.url})
                if self.path == "/getMedia":
                    endpoint.requests.append(body)
                    if body.get("StreamARN") not in endpoint.streams:
                        return self._error(404, "ResourceNotFoundException", "stream not found")
                    return endpoint._stream(self, body)
                self._error(404, "UnknownOperationException", self.path)

            def _json(self, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str, message: str) -> None:
                data = json.dumps({"message": message}).encode()
                self.send_response(status)
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _first(self, frags: list[Fragment], selector: dict) -> int:
        kind = selector.get("StartSelectorType")
        after = selector.get("AfterFragmentNumber") or selector.get("ContinuationToken")
        if kind in ("FRAGMENT_NUMBER", "CONTINUATION_TOKEN"):
            for i, f in enumerate(frags):
                if int(f.number) > int(after):
                    return i
            return len(frags)
        return 0  # NOW, EARLIEST: the test streams are all "live" from their first fragment

    def _stream(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        frags = self.streams[body["StreamARN"]]
        cut = self.cut_at.pop(0) if self.cut_at else None
        handler.send_response(200)
        handler.send_header("content-type", "video/webm")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        sent = 0
        try:
            for frag in frags[self._first(frags, body.get("StartSelector", {})):]:
                data = frag.to_bytes()
                pause = frag.duration_ms / 1000 / self.speed * self.chunk / max(1, len(data))
                for at in range(0, len(data), self.chunk):
                    piece = data[at:at + self.chunk]
                    if cut is not None and sent + len(piece) > cut:
                        piece = piece[:cut - sent]
                        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if piece else b"")
                        handler.wfile.flush()
                        handler.close_connection = True
                        return  # dropped: no last chunk
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    handler.wfile.flush()
                    sent += len(piece)
                    time.sleep(pause)
                self.sent.append(frag.number)
            time.sleep(self.hold_s)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stream_arn(name: str = "connect-contact-1", region: str = "us-east-1") -> str:
    return f"arn:aws:kinesisvideo:{region}:123456789012:stream/{name}/1654194145007"


def aws_env(monkeypatch, endpoint: KinesisVideoEndpoint) -> None:
    """Point boto3 at the local endpoint the standard way; any credentials do (it does not check them)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS_VIDEO", endpoint.url)
    monkeypatch.delenv("AWS_ENDPOINT_URL_KINESIS_VIDEO_MEDIA", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
