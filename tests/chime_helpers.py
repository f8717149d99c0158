"""What the Chime tests share: boto3's real `chime-sdk-meetings` client pointed at a served app, an
attendee that streams PCM16 over the attendee socket, and a subscriber of the meeting socket."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import boto3
import numpy as np
import websockets
from botocore.config import Config

KEY, SECRET, TENANT = "ka", "sa", "acme"


def chime_client(server: Any, key: str = KEY, secret: str = SECRET) -> Any:
    return boto3.client("chime-sdk-meetings", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


async def stream_pcm(url: str, audio16k: np.ndarray, frame_ms: int = 100, pace: float = 0.5) -> None:
    """Send 16 kHz PCM16 in `frame_ms` frames, at 1/pace of real time, then stop and wait for the close."""
    data = audio16k.astype("<i2").tobytes()
    step = 32 * frame_ms
    async with websockets.connect(url) as ws:
        for k in range(0, len(data), step):
            await ws.send(data[k:k + step])
            await asyncio.sleep(frame_ms / 1000 * pace)
        await ws.send(json.dumps({"type": "stop"}))
        await ws.wait_closed()


class Subscriber:
    """Collects the frames of a meeting socket in a thread of its own until it closes."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.frames: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self.opened = threading.Event()
        self.close_reason: str | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        try:
            async with websockets.connect(self.url, additional_headers=self.headers) as ws:
                self.opened.set()
                try:
                    async for message in ws:
                        self.frames.append(json.loads(message))
                except websockets.ConnectionClosed:
                    pass  # a server that stopped
                self.close_reason = ws.close_reason
        finally:
            self.opened.set()
            self.closed.set()

    def statuses(self) -> list[str]:
        return [f["status"]["type"] for f in list(self.frames) if "status" in f]

    def results(self) -> list[dict[str, Any]]:
        return [r for f in list(self.frames) if "transcript" in f for r in f["transcript"]["results"]]

    def finals(self, attendee: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.results() if not r["isPartial"]
                and (attendee is None or r["alternatives"][0]["items"]
                     and r["alternatives"][0]["items"][0]["attendee"]["attendeeId"] == attendee)]

    def text_of(self, attendee: str) -> str:
        return " ".join(r["alternatives"][0]["transcript"] for r in self.finals(attendee)).lower()
