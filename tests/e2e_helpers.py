"""Helpers for end-to-end tests that drive a whole call through a running app and then look
everywhere its words could have gone: webhooks, the messages API, the events WebSocket, logs and
every row of the database.

- `WebhookReceiver`: a local HTTP server that keeps every JSON body POSTed to it.
- `TwilioSender`: a Twilio Media Streams client (connected, start, media on both tracks, stop) that
  sends 8 kHz mu-law faster than real time, with correct per-track timestamps.
- `EventsSubscriber`: a client of `WS /v1/calls/{guid}/events` that keeps every message until the
  server closes the socket after `media-ended`.
- `digit_runs`, `Secret`, `leaks_in`: finding sensitive numbers in text whatever form the
  recogniser wrote them in (digits with or without separators, or number words).
- `dump_database`: every row of every table, as Python values.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator

import websockets

# -- peers --------------------------------------------------------------------------------------------


class WebhookReceiver:
    """Keeps every JSON body POSTed to it (the raw text, and the webhook-id of each) and answers 200;
    while `accept` is clear it answers 503 instead and keeps nothing (a receiver that is down)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.raw: list[str] = []
        self.ids: list[str] = []
        self.refused = 0
        self.accept = threading.Event()
        self.accept.set()
        bodies, raw, outer = self.bodies, self.raw, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("content-length") or 0)
                data = self.rfile.read(length).decode("utf-8", "replace")
                if not outer.accept.is_set():
                    outer.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.ids.append(self.headers.get("webhook-id", ""))
                raw.append(data)
                try:
                    bodies.append(json.loads(data))
                except ValueError:
                    pass
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def transcripts(self, guid: str) -> list[dict]:
        return [b for b in list(self.bodies)
                if b.get("type") == "transcript" and b.get("externalConversationId") == guid]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TwilioSender:
    """One Twilio Media Streams connection carrying both tracks of a call.

    `open()` sends `connected` and `start`; `send_audio()` sends 20 ms mu-law frames of both tracks,
    interleaved, `speed` times faster than real time; `close()` sends `stop` and closes.
    """

    FRAME = 160  # bytes of 8 kHz mu-law in 20 ms, what Twilio sends

    def __init__(self, url: str, guid: str, stream_sid: str = "MZe2e") -> None:
        self.url = url
        self.guid = guid
        self.sid = stream_sid
        self.seq = 0
        self.ws: Any = None

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=None)
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.ws.send(json.dumps({
            "event": "start", "sequenceNumber": self._next(), "streamSid": self.sid,
            "start": {"streamSid": self.sid, "accountSid": "ACe2e", "callSid": "CAe2e",
                      "tracks": ["inbound", "outbound"], "customParameters": {"guid": self.guid},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))

    async def send_audio(self, tracks: dict[str, bytes], speed: float = 4.0, batch_ms: int = 200) -> None:
        """`tracks`: Twilio track name -> mu-law bytes (equal lengths)."""
        n = max(len(b) for b in tracks.values())
        per_batch = batch_ms * 8
        chunk = {name: 0 for name in tracks}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for at in range(0, n, per_batch):
            for off in range(at, min(at + per_batch, n), self.FRAME):
                for name, data in tracks.items():
                    frame = data[off:off + self.FRAME]
                    if not frame:
                        continue
                    chunk[name] += 1
                    await self.ws.send(json.dumps({
                        "event": "media", "sequenceNumber": self._next(), "streamSid": self.sid,
                        "media": {"track": name, "chunk": str(chunk[name]), "timestamp": str(off // 8),
                                  "payload": base64.b64encode(frame).decode()}}))
            # Pace: batch k ends at (k+1) * batch_ms / speed of wall time.
            due = t0 + (at + per_batch) / 8000 / speed
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def close(self) -> None:
        await self.ws.send(json.dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.sid,
                                       "stop": {"accountSid": "ACe2e", "callSid": "CAe2e"}}))
        try:
            async with asyncio.timeout(30):
                async for _ in self.ws:
                    pass
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        await self.ws.close()


class EventsSubscriber:
    """Every message of `WS /v1/calls/{guid}/events` (parsed JSON), until the server closes it."""

    def __init__(self, ws_url: str, guid: str, api_id: str, secret: str) -> None:
        self.url = f"{ws_url}/v1/calls/{guid}/events?apiId={api_id}&apiSecret={secret}"
        self.messages: list[dict] = []
        self.raw: list[str] = []
        self.close_code: int | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        ws = await websockets.connect(self.url, max_size=None)
        self.task = asyncio.create_task(self._run(ws))

    async def _run(self, ws) -> None:
        try:
            async for message in ws:
                self.raw.append(message if isinstance(message, str) else message.decode("utf-8", "replace"))
                self.messages.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None

    async def wait_closed(self, limit_s: float = 120.0) -> None:
        async with asyncio.timeout(limit_s):  # a hang guard only
            await self.task


# -- finding numbers in text --------------------------------------------------------------------------

UNITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
         "six": "6", "seven": "7", "eight": "8", "nine": "9"}
TEENS = {"ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
         "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19"}
TENS = {"twenty": "2", "thirty": "3", "forty": "4", "fifty": "5", "sixty": "6", "seventy": "7", "eighty": "8",
        "ninety": "9"}
_SEPARATORS = " \t,.;:-/_()'\"\u2013\u2014"
_TOKEN = re.compile(r"\d+|[a-z]+|#+|[^\sa-z\d#]", re.I)


def spoken_to_digits(text: str) -> str:
    """Number words become digits ("four one one one" -> "4 1 1 1", "forty-five" -> "45",
    "twenty seven" -> "27", "double one" -> "11"); everything else is kept."""
    tokens = _TOKEN.findall(text)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i].lower()
        nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
        nxt2 = tokens[i + 2].lower() if i + 2 < len(tokens) else ""
        if t in ("double", "triple") and nxt in UNITS:
            out.append(UNITS[nxt] * (2 if t == "double" else 3))
            i += 2
        elif t in TENS:
            if nxt in UNITS and nxt not in ("oh", "o", "zero"):
                out.append(TENS[t] + UNITS[nxt])
                i += 2
            elif nxt == "-" and nxt2 in UNITS:
                out.append(TENS[t] + UNITS[nxt2])
                i += 3
            else:
                out.append(TENS[t] + "0")
                i += 1
        elif t in TEENS:
            out.append(TEENS[t])
            i += 1
        elif t in UNITS and t != "o":
            out.append(UNITS[t])
            i += 1
        elif t == "hundred" and out and out[-1].isdigit():
            out[-1] += "00" if nxt not in UNITS and nxt not in TENS and nxt not in TEENS else ""
            i += 1
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def digit_runs(text: str, min_len: int = 1) -> list[str]:
    """Runs of digits after number words become digits and separators between digits collapse
    ("41, 1, 1" -> "4111"; "4-1-1-1" -> "4111"; "five. Five. 5867" -> "555867"). A '#' or a word
    ends a run."""
    runs: list[str] = []
    current = ""
    for tok in _TOKEN.findall(spoken_to_digits(text)):
        if tok.isdigit():
            current += tok
        elif tok in _SEPARATORS or tok.strip() == "":
            continue
        else:
            if current:
                runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return [r for r in runs if len(r) >= min_len]


def shares(run: str, secret: str, k: int = 3) -> str | None:
    """The first k-digit piece of `run` that also occurs in `secret`, or None."""
    for i in range(len(run) - k + 1):
        if run[i:i + k] in secret:
            return run[i:i + k]
    return None


@dataclass(frozen=True)
class Secret:
    """One sensitive number: its digits, how it was said, and the forms it may be written in."""

    name: str
    digits: str
    spoken: str
    groups: tuple[int, ...]  # how the digits are grouped when said or written ("4111 1111 ...")

    def written_forms(self) -> list[str]:
        """Contiguous, and grouped with each separator a recogniser or formatter uses."""
        parts, at = [], 0
        for g in self.groups:
            parts.append(self.digits[at:at + g])
            at += g
        forms = {self.digits}
        for sep in (" ", ", ", ",", "-", ".", "/", ". "):
            forms.add(sep.join(parts))
        return sorted(forms)

    def spoken_forms(self) -> list[str]:
        words = re.sub(r"[^a-z ]", " ", self.spoken.lower()).split()
        return [" ".join(words)]


def leaks_in(text: str, secrets: Iterable[Secret], *, min_run: int = 3) -> list[str]:
    """Every way `text` gives away one of `secrets`: a written or spoken form of it, or a run of
    `min_run` or more digits (after separators collapse and number words become digits) that shares
    `min_run` digits in a row with one of them. Empty when nothing leaks."""
    found: list[str] = []
    lowered = re.sub(r"\s+", " ", text.lower())
    words_only = " ".join(re.sub(r"[^a-z ]", " ", lowered).split())
    for s in secrets:
        for form in s.written_forms():
            if re.search(rf"(?<![\d]){re.escape(form)}(?![\d])", lowered):
                found.append(f"{s.name}: written form {form!r}")
        for form in s.spoken_forms():
            if len(form.split()) >= 2 and f" {form} " in f" {words_only} ":
                found.append(f"{s.name}: spoken form {form!r}")
    joined = "".join(s.digits for s in secrets)
    for run in digit_runs(text, min_run):
        for s in secrets:
            piece = shares(run, s.digits, min_run)
            if piece is not None:
                found.append(f"{s.name}: digit run {run!r} shares {piece!r}")
                break
        else:
            piece = shares(run, joined, min_run)
            if piece is not None:
                found.append(f"digit run {run!r} shares {piece!r} with the secrets read in a row")
    return found


# -- what a value holds --------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
_MSG_ID = re.compile(r"msg_[0-9a-f-]{36}_\d+", re.I)
_HOST_PORT = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b")


def strip_identifiers(text: str) -> str:
    """Remove what is made of digits but is not speech: uuids (call and stream ids, with a `-seq`
    or `_seq` tail as messageId and webhook ids have), ISO timestamps, IP addresses and ports."""
    text = _HOST_PORT.sub(" ", _MSG_ID.sub(" ", text))
    text = re.sub(_UUID.pattern + r"([-_:]\d+)?", " ", text, flags=re.I)
    return _ISO.sub(" ", text)


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a value (dict keys and values, lists; JSON text is opened too)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in "{[":
            try:
                inner = json.loads(stripped)
            except ValueError:
                inner = None
            if isinstance(inner, (dict, list)):
                yield from strings_in(inner)
                return
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_in(v)


# -- the database ---------------------------------------------------------------------------------------


def dump_database(url: str) -> dict[str, list[dict]]:
    """Every row of every table (reflected, so tables added later are included)."""
    from sqlalchemy import MetaData, create_engine, select

    from callscribe.store.db import normalise_url

    engine = create_engine(normalise_url(url))
    try:
        meta = MetaData()
        meta.reflect(engine)
        out: dict[str, list[dict]] = {}
        with engine.connect() as conn:
            for name, table in meta.tables.items():
                out[name] = [dict(row._mapping) for row in conn.execute(select(table))]
        return out
    finally:
        engine.dispose()


# -- log lines --------------------------------------------------------------------------------------------

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_HEX_ADDRESS = re.compile(r"0x[0-9a-f]+", re.I)
_HTTP_DATE = re.compile(r"\b[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\b")
# A numeric JSON field, even when a truncated dump has cut the key's opening quote.
_JSON_NUMBER = re.compile(r"\w+\"\s*:\s*\"?-?\d+(\.\d+)?\"?")
_TRUNCATED = re.compile(r"\(\d+ characters truncated\)")
#: A psycopg Json parameter as the SQL log shows it: cut at a fixed length, maybe inside a string
#: (which would unbalance the quotes of the rest of the line). Stored JSON is checked in the database.
_CUT_JSON = re.compile(r"Json\(.*?\.\.\. \(\d+ chars\)\)")
_DATETIME = re.compile(r"datetime\.\w+\([^()]*(\([^()]*\))?[^()]*\)")
_RANDOM_TOKEN = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")
#: Loggers of the test's own clients (the requests it made, not what callscribe wrote).
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client")
#: WebSocket frame dumps: their content is what the peer received, and that is checked in full at
#: the peer (every events message; Twilio frames carry only audio).
FRAME_DUMP = re.compile(r"^[<>] (TEXT|BINARY|CONT|PING|PONG|CLOSE) ")


def _strip_noise(text: str) -> str:
    text = strip_identifiers(text)
    for pattern in (_HEX_ADDRESS, _HTTP_DATE, _JSON_NUMBER, _TRUNCATED):
        text = pattern.sub(" ", text)
    return _RANDOM_TOKEN.sub(lambda m: " " if re.search(r"\d", m.group()) and re.search(r"[A-Za-z]", m.group())
                             else m.group(), text)


def log_texts(records: Iterable[Any]) -> tuple[list[str], list[str]]:  # noqa: C901
    """(whole lines, text pieces) of log records, for the two kinds of search a log gets.

    Whole lines are searched for the unmistakable forms of a secret (the full number written or
    spoken). Log lines are full of numbers that are not speech (ports, timestamps, byte counts, SQL
    parameters such as offsets in ms), so the digit-run search runs only on the string values a line
    quotes (SQL string parameters, JSON string values, quoted messages), with identifiers, addresses,
    dates, numeric JSON fields and random tokens taken out.
    """
    lines: list[str] = []
    pieces: list[str] = []
    for r in records:
        if r.name.startswith(CLIENT_LOGGERS):
            continue
        message = r.getMessage()
        if FRAME_DUMP.match(message):
            continue
        line = message
        if r.exc_info and r.exc_info[1] is not None:
            line += f" {r.exc_info[1]!r}"
        if getattr(r, "exc_text", None):
            line += " " + r.exc_text
        lines.append(f"{r.name} {r.levelname} {line}")
        line = _DATETIME.sub(" ", _CUT_JSON.sub(" ", line))
        for m in _QUOTED.finditer(line):
            quoted = m.group(1) if m.group(1) is not None else m.group(2)
            for s in strings_in(quoted):
                pieces.append(_strip_noise(s))
    return lines, pieces
