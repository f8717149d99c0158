"""A Genesys AudioHook client (protocol version 2), written from the protocol description in
shared/specs/media-protocols.md §2 and Genesys's documentation, not from callscribe's server code.

It plays the Genesys side: signs the upgrade (HTTP message signature, HMAC-SHA256), runs the open
transaction, streams interleaved audio in binary frames while counting its position, and sends
ping / update / paused / resumed / discarded / error / close with the envelope's sequence numbers.
Everything the server sends is kept in `received`, in order.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import websockets

COMPONENTS = ("@request-target", "@authority", "audiohook-organization-id", "audiohook-session-id",
              "audiohook-correlation-id", "x-api-key")
NULL_UUID = "00000000-0000-0000-0000-000000000000"


def signature_headers(uri: str, headers: dict[str, str], api_key: str, secret_b64: str, *, nonce: str | None = None,
                      created: int | None = None, expires: int | None = None) -> dict[str, str]:
    """Signature-Input and Signature for an upgrade to `uri` carrying `headers` (names lower-case)."""
    parts = urlsplit(uri)
    default_port = {"ws": 80, "wss": 443, "http": 80, "https": 443}[parts.scheme]
    authority = parts.hostname or ""
    if parts.port and parts.port != default_port:
        authority += f":{parts.port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    created = int(time.time()) if created is None else created
    expires = created + 3600 if expires is None else expires
    nonce = nonce or base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
    names = " ".join(f'"{c}"' for c in COMPONENTS)
    params = f'({names});keyid="{api_key}";nonce="{nonce}";alg="hmac-sha256";created={created};expires={expires}'
    values = {"@request-target": target, "@authority": authority, **headers}
    lines = [f'"{c}": {values[c]}' for c in COMPONENTS] + [f'"@signature-params": {params}']
    digest = hmac.new(base64.b64decode(secret_b64), "\n".join(lines).encode(), hashlib.sha256).digest()
    return {"signature-input": f"sig1={params}", "signature": f"sig1=:{base64.b64encode(digest).decode()}:"}


def media(channels: list[str], fmt: str = "PCMU", rate: int = 8000) -> dict[str, Any]:
    return {"type": "audio", "format": fmt, "channels": channels, "rate": rate}


def duration(seconds: float) -> str:
    return f"PT{seconds:.3f}".rstrip("0").rstrip(".") + "S"


def seconds(value: str) -> float:
    assert value.startswith("PT") and value.endswith("S"), value
    return float(value[2:-1])


def interleave(*channels: bytes) -> bytes:
    """Sample-interleave equal-length single-byte-per-sample (PCMU) channels."""
    n = min(len(c) for c in channels)
    out = bytearray(n * len(channels))
    for i, c in enumerate(channels):
        out[i::len(channels)] = c[:n]
    return bytes(out)


class AudioHookClient:
    def __init__(self, uri: str, api_key: str, secret_b64: str | None, *, organization_id: str | None = None,
                 session_id: str | None = None, signed: bool = True, header_overrides: dict[str, str] | None = None,
                 sign_overrides: dict[str, Any] | None = None):
        self.uri = uri
        self.organization_id = organization_id or str(uuid.uuid4())
        self.session_id = session_id or str(uuid.uuid4())
        self.headers = {"audiohook-organization-id": self.organization_id, "audiohook-session-id": self.session_id,
                        "audiohook-correlation-id": str(uuid.uuid4()), "x-api-key": api_key}
        if signed and secret_b64 is not None:
            self.headers.update(signature_headers(uri, self.headers, api_key, secret_b64, **(sign_overrides or {})))
        self.headers.update(header_overrides or {})
        self.headers["user-agent"] = "GenesysCloud-AudioHook-Client"
        self.seq = 0
        self.serverseq = 0
        self.samples = 0  # position, per channel
        self.rate = 8000
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "AudioHookClient":
        self._ws = await websockets.connect(self.uri, additional_headers=self.headers, max_size=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                self.received.append(msg)
                self.serverseq = msg["seq"]
                await self._inbox.put(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            await self._inbox.put(None)

    @property
    def position(self) -> str:
        return duration(self.samples / self.rate)

    async def send(self, kind: str, parameters: dict[str, Any] | None = None, **envelope: Any) -> dict[str, Any]:
        self.seq += 1
        msg = {"version": "2", "id": self.session_id, "type": kind, "seq": self.seq, "serverseq": self.serverseq,
               "position": self.position, "parameters": parameters if parameters is not None else {}}
        msg.update(envelope)
        await self._ws.send(json.dumps(msg))
        return msg

    async def send_raw(self, data: str | bytes) -> None:
        await self._ws.send(data)

    async def audio(self, frame: bytes, channels: int = 2, bytes_per_sample: int = 1) -> None:
        await self._ws.send(frame)
        self.samples += len(frame) // (channels * bytes_per_sample)

    async def stream(self, data: bytes, frame_bytes: int = 3200, channels: int = 2) -> None:
        """Frames of `frame_bytes` (3200 = 200 ms of stereo PCMU, as the reference client sends)."""
        for i in range(0, len(data), frame_bytes):
            await self.audio(data[i:i + frame_bytes], channels)

    async def next(self, timeout: float = 120.0) -> dict[str, Any] | None:
        """The next server message (None once the socket closed)."""
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def expect(self, kind: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the next message of this type, skipping `event`s (kept in `received`)."""
        while True:
            msg = await self.next(timeout)
            assert msg is not None, f"socket closed while waiting for {kind!r}; got {self.received}"
            if msg["type"] == kind:
                return msg
            assert msg["type"] == "event", f"expected {kind!r}, got {msg}"

    async def open(self, conversation_id: str | None = None, offers: list[dict[str, Any]] | None = None,
                   **extra: Any) -> dict[str, Any]:
        params = {"organizationId": self.organization_id, "conversationId": conversation_id or str(uuid.uuid4()),
                  "participant": {"id": str(uuid.uuid4()), "ani": "+15551234567", "aniName": "Pat Doe",
                                  "dnis": "+18005550100"},
                  "media": offers if offers is not None else [media(["external", "internal"]), media(["external"]),
                                                              media(["internal"])],
                  **extra}
        await self.send("open", params)
        return await self.expect("opened")

    async def close(self, reason: str = "end") -> dict[str, Any]:
        await self.send("close", {"reason": reason})
        return await self.expect("closed")

    async def wait_closed(self, timeout: float = 30.0) -> int | None:
        """After `closed` the client closes the socket, as Genesys does."""
        await self._ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return self.close_code

    def transcripts(self) -> list[dict[str, Any]]:
        return [e["data"] for m in self.received if m["type"] == "event"
                for e in m["parameters"]["entities"] if e["type"] == "transcript"]
