"""Redaction end to end: a customer reads a card number, its expiry, the security code and a social
security number on a call, and none of those digits comes out of callscribe anywhere.

The call is synthesised (two Piper voices, `speech.build_call`), turned into 8 kHz mu-law by sox and
sent over a Twilio Media Streams WebSocket, both tracks, faster than real time, to the real app with
the real speech model and redaction engine. The ASAPP control plane starts transcription with a
`redactionOutput`. Everything the call produced is then collected from every way out: the webhook
receiver's bodies, `GET /conversation/v1/conversation/messages`, an events WebSocket subscriber
(partials included), every log record of every logger at DEBUG (uvicorn's too), and every row of
every table of the database (SQLite, and PostgreSQL when the server is available).

"Sensitive" is defined defensively (tests/e2e_helpers.py `leaks_in`): the written forms of each
number (contiguous, or grouped with spaces, commas, dashes, dots or slashes), the words it was read
in, and any run of three or more digits, after separators collapse and number words become digits,
that shares three digits in a row with one of the numbers. The script says no other numbers, so
nothing legitimate is caught.

The recogniser miscounts repeated digits, so the cases read both a repeated test card
(4111 1111 1111 1111) and a card without repeats; the unredacted checks look for long digit runs
rather than the exact number.
"""

from __future__ import annotations

import asyncio
import logging
import re
import random
import string
from dataclasses import dataclass, field

import httpx
import pytest

from callscribe.config import load_settings
from callscribe.testing import speech
from e2e_helpers import (
    EventsSubscriber,
    Secret,
    TwilioSender,
    WebhookReceiver,
    digit_runs,
    dump_database,
    leaks_in,
    log_texts,
    shares,
    strings_in,
    strip_identifiers,
)
from servers import running_app, wait_until

pytestmark = pytest.mark.slow

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
HANG_GUARD_S = 180.0  # stops a broken test from hanging; never a timing assertion
SPEED = 4.0  # audio is sent this many times faster than real time

CARDS = {
    "repeated": Secret("card", "4111111111111111",
                       "four one one one, one one one one, one one one one, one one one one", (4, 4, 4, 4)),
    "realistic": Secret("card", "4916385271402869",
                        "four nine one six, three eight five two, seven one four zero, two eight six nine",
                        (4, 4, 4, 4)),
}
EXPIRY = Secret("expiry", "0427", "oh four, twenty seven", (2, 2))
EXPIRY_SHORT = Secret("expiry", "427", "four, twenty seven", (1, 2))  # "4/27"
CVV = Secret("cvv", "371", "three seven one", (3,))
SSN = Secret("ssn", "123456789", "one two three, four five, six seven eight nine", (3, 2, 4))


def script(card: Secret) -> list[tuple[str, str]]:
    return [
        ("agent", "Thank you for calling Northwind billing. To take the payment I need your card number please."),
        ("customer", f"Sure, my card number is {card.spoken}."),
        ("agent", "Thank you. And the expiry date on the card?"),
        ("customer", f"It expires {EXPIRY.spoken}."),
        ("agent", "What is the security code on the back of the card?"),
        ("customer", f"The security code is {CVV.spoken}."),
        ("agent", "Finally, to verify your identity, what is your social security number?"),
        ("customer", f"My social security number is {SSN.spoken}."),
        ("agent", "Perfect, the payment went through. Is there anything else?"),
        ("customer", "No, that is everything. Thank you very much, goodbye."),
    ]


def secrets_of(card: Secret) -> list[Secret]:
    return [card, EXPIRY, EXPIRY_SHORT, CVV, SSN]


# Words of the script the recogniser reliably gets, none of them sensitive.
CUSTOMER_WORDS = {"card", "number", "expires", "security", "code", "social", "everything", "goodbye"}
AGENT_WORDS = {"northwind", "payment", "card", "number", "expiry", "security", "code", "identity", "social"}


@pytest.fixture(scope="module")
def calls() -> dict[str, dict[str, bytes]]:
    """Each card's call as Twilio tracks of 8 kHz mu-law: inbound = customer, outbound = agent.
    Made before any log capture starts (the synthesiser sees the plain text)."""
    out = {}
    for name, card in CARDS.items():
        call = speech.build_call(script(card), gap_s=1.2)
        out[name] = {"inbound": speech.telephony(call.tracks["customer"]),
                     "outbound": speech.telephony(call.tracks["agent"])}
    return out


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@dataclass
class Collected:
    """Everything one call produced, from every way out."""

    guid: str
    mode: str
    start: dict
    stop: dict
    webhooks: list[dict]
    messages: list[dict]
    events: list[dict]
    events_close: int | None
    logs: list[logging.LogRecord] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)

    def finals(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "final"]

    def partials(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "partial"]

    def text_of(self, role: str, field_name: str = "text") -> str:
        return " ".join(e.get(field_name) or "" for e in self.finals() if e["role"] == role)


class AllLogs:
    """Every log record of every logger at DEBUG, uvicorn's (which do not propagate) included."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.attached: list[logging.Logger] = []

    def start(self) -> None:
        self.caplog.set_level(logging.DEBUG)
        for name in list(logging.root.manager.loggerDict):
            logger = logging.getLogger(name)
            if logger.level > logging.DEBUG:
                self.caplog.set_level(logging.DEBUG, logger=name)
            if not logger.propagate and self.caplog.handler not in logger.handlers:
                logger.addHandler(self.caplog.handler)
                self.attached.append(logger)
        self.caplog.clear()

    def records(self) -> list[logging.LogRecord]:
        return list(self.caplog.records)

    def stop(self) -> None:
        for logger in self.attached:
            logger.removeHandler(self.caplog.handler)


@pytest.fixture
def app(engine, webhook, db_url, tmp_path, caplog):
    settings = load_settings(data_dir=tmp_path / "data", sip_port=0, api_keys="ka:sa:acme", webhook_url=webhook.url,
                             database_url=db_url, start_wait_for_media_s=20)
    logs = AllLogs(caplog)
    with running_app(settings, engine=engine) as server:
        logs.start()  # after uvicorn set its own loggers' levels
        server.logs = logs
        yield server
    logs.stop()


def run_call(server, webhook: WebhookReceiver, tracks: dict[str, bytes], mode: str) -> Collected:
    """One call: Twilio stream connects, start-streaming with `mode`, the whole call's audio,
    stop-streaming, the stream stops; then everything is collected."""
    # Letters only: the guid is everywhere, and must not bring digits of its own.
    guid = "redact-e2e-" + mode.replace("_", "-") + "-" + "".join(random.choices(string.ascii_lowercase, k=10))

    async def drive() -> tuple[dict, dict, EventsSubscriber]:
        async with httpx.AsyncClient(base_url=server.url, headers=ACME, timeout=HANG_GUARD_S) as http:
            r = await http.get("/mg-autotranscribe/v1/twilio-media-stream-url")
            assert r.status_code == 200, r.text
            sender = TwilioSender(r.json()["streamingUrl"], guid)
            await sender.open()
            async with asyncio.timeout(HANG_GUARD_S):
                while (await http.get(f"/v1/calls/{guid}")).status_code != 200:
                    await asyncio.sleep(0.05)
            events = EventsSubscriber(server.ws_url, guid, "ka", "sa")
            await events.start()
            start = await http.post("/mg-autotranscribe/v1/start-streaming", json={
                "namespace": "twilio", "guid": guid, "customerId": "cust-1", "agentId": "agent-1",
                "autotranscribeParams": {"redactionOutput": mode, "audioRecordingAllowed": True}})
            assert start.status_code == 200, start.text
            await sender.send_audio(tracks, speed=SPEED)
            stop = await http.post("/mg-autotranscribe/v1/stop-streaming", json={"namespace": "twilio", "guid": guid})
            assert stop.status_code == 200, stop.text
            await sender.close()
            await events.wait_closed(HANG_GUARD_S)
            return start.json(), stop.json(), events

    start, stop, events = asyncio.run(drive())
    assert events.close_code == 1000, events.close_code
    expected = sum(leg["summary"]["transcripts"] for leg in stop["autotranscribeResponse"].values())
    assert expected >= 4, stop
    wait_until(lambda: len(webhook.transcripts(guid)) >= expected, "every final's webhook", HANG_GUARD_S)
    server.run(server.services.persister.flush())
    r = httpx.get(f"{server.url}/conversation/v1/conversation/messages", params={"externalId": guid}, headers=ACME)
    assert r.status_code == 200, r.text
    return Collected(guid, mode, start, stop, webhook.transcripts(guid), r.json()["items"], events.messages,
                     events.close_code, server.logs.records(), dump_database(server.settings.resolved_database_url))


def describe(c: Collected) -> str:
    """The call as the recogniser heard it, for assertion messages."""
    lines = [f"{e['role']:8} {e['type']:7} {e['text']!r}" + (f" | {e['unredactedText']!r}" if "unredactedText" in e else "")
             for e in c.events if e["type"] in ("partial", "final")]
    return "\n".join(lines)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# -- the places text can go ----------------------------------------------------------------------------


def delivered_texts(c: Collected) -> list[tuple[str, str]]:
    """(where, text) for every string a user of callscribe receives about the call."""
    out = []
    for i, body in enumerate(c.webhooks):
        out += [(f"webhook {i}", s) for s in strings_in(body)]
    for i, item in enumerate(c.messages):
        out += [(f"messages item {i}", s) for s in strings_in(item)]
    for e in c.events:
        out += [(f"event seq {e['seq']} ({e['type']})", s) for s in strings_in(e)]
    return out


def stored_texts(c: Collected) -> list[tuple[str, str]]:
    out = []
    for table, rows in c.tables.items():
        for i, row in enumerate(rows):
            for column, value in row.items():
                out += [(f"table {table} row {i} column {column}", s) for s in strings_in(value)]
    return out


def find_leaks(places: list[tuple[str, str]], secrets: list[Secret]) -> list[str]:
    leaks = []
    for where, text in places:
        for leak in leaks_in(strip_identifiers(text), secrets):
            leaks.append(f"{where}: {leak} in {text[:300]!r}")
    return leaks


def log_leaks(c: Collected, secrets: list[Secret]) -> list[str]:
    """Every log record of every logger at DEBUG (the SQL engine's statements and parameters, the
    server's own lines, uvicorn's): a full number written or spoken anywhere in a line, or a
    sensitive digit run in a string a line quotes."""
    lines, pieces = log_texts(c.logs)
    assert len(lines) > 100 and any("INSERT INTO utterances" in line for line in lines), \
        "the SQL engine's lines were not captured"
    leaks = []
    for i, line in enumerate(lines):
        for s in secrets:
            forms = (s.written_forms() if len(s.digits) >= 9 else []) + s.spoken_forms()
            leaks += [f"log line {i}: {s.name} {f!r} in {line[:300]!r}" for f in forms if f in line.lower()]
    # A piece with words is text (3 digits in a row are enough); one without is most likely a
    # value between strings, where only a longer run counts.
    for p in pieces:
        min_run = 3 if re.search(r"[A-Za-z]{2,}", p) else 6
        leaks += [f"quoted in a log line: {leak} in {p[:300]!r}" for leak in leaks_in(p, secrets, min_run=min_run)]
    return leaks


def assert_heard_the_call(c: Collected) -> None:
    """The call was transcribed: most of the non-sensitive words of each side came through, and the
    numbers are masked with '#' rather than missing."""
    customer, agent = c.text_of("customer"), c.text_of("agent")
    assert "card" in words(customer + " " + agent), describe(c)
    assert len(words(customer) & CUSTOMER_WORDS) >= len(CUSTOMER_WORDS) - 3, describe(c)
    assert len(words(agent) & AGENT_WORDS) >= len(AGENT_WORDS) - 2, describe(c)


def masked_groups(text: str) -> list[str]:
    return re.findall(r"#+(?:[\s,.\-/]+#+)*", text)


# -- tests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("db_url", "card"), [
    ("sqlite", "repeated"),
    ("sqlite", "realistic"),
    pytest.param("postgres", "realistic", marks=pytest.mark.postgres),
], indirect=["db_url"])
def test_redacted_call_leaks_no_digit_anywhere(app, webhook, calls, card):
    c = run_call(app, webhook, calls[card], "redacted")
    secrets = secrets_of(CARDS[card])
    print(describe(c))

    assert_heard_the_call(c)
    # '#' where the numbers were: the security code and SSN turns have theirs, and in all at least
    # the card's 16, the code's 3 and the SSN's 9 characters are masked (the expiry turn is not
    # counted on: the recogniser sometimes loses it).
    customer = [e["text"] for e in c.finals() if e["role"] == "customer"]
    assert sum(t.count("#") for t in customer) >= 16 + 3 + 9, describe(c)
    assert any("code" in t.lower() and t.count("#") >= 3 for t in customer), describe(c)
    assert any("social" in t.lower() and t.count("#") >= 9 for t in customer), describe(c)
    assert len(masked_groups(" ".join(customer))) >= 3, describe(c)
    assert c.partials(), "no partial was published, so partial masking was not exercised"

    # No unredacted field anywhere in this mode.
    assert not any("unredactedText" in e for e in c.events), describe(c)
    assert not any("unredactedText" in m for m in c.messages)
    assert not any("unredactedUtterance" in b["autotranscribeResponse"] for b in c.webhooks)
    # The webhooks are the finals, in the ASAPP shape.
    assert len(c.webhooks) == len(c.finals())
    assert [b["autotranscribeResponse"]["utterance"][0]["text"] for b in sorted(c.webhooks, key=lambda b: b["sequence"])] \
        == [e["text"] for e in c.finals()]
    assert len(c.messages) == len(c.finals())

    leaks = find_leaks(delivered_texts(c), secrets)
    assert not leaks, "\n".join(leaks) + "\n\n" + describe(c)

    # The database: every text and JSON value of every row of every table.
    assert c.tables.get("utterances"), sorted(c.tables)
    assert len(c.tables["recordings"]) == 2, c.tables["recordings"]
    leaks = find_leaks(stored_texts(c), secrets)
    assert not leaks, "\n".join(leaks)
    assert all(u["unredacted_text"] is None and u["words"] is None for u in c.tables["utterances"])

    # The logs, every logger at DEBUG (the SQL engine's statement parameters included).
    leaks = log_leaks(c, secrets)
    assert not leaks, "\n".join(leaks[:50])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_redacted_and_unredacted_call_has_both(app, webhook, calls):
    card = CARDS["realistic"]
    c = run_call(app, webhook, calls["realistic"], "redacted_and_unredacted")
    print(describe(c))
    assert_heard_the_call(c)

    # The normal fields are redacted exactly as in `redacted` mode.
    normal = [(f"event seq {e['seq']}", e["text"]) for e in c.events if e["type"] in ("partial", "final")]
    normal += [(f"webhook {b['sequence']}", b["autotranscribeResponse"]["utterance"][0]["text"]) for b in c.webhooks]
    normal += [(f"messages item {i}", m["text"]) for i, m in enumerate(c.messages)]
    leaks = find_leaks(normal, secrets_of(card))
    assert not leaks, "\n".join(leaks) + "\n\n" + describe(c)

    # Each final carries its unredacted text beside it, in every way out: the same text where
    # nothing was masked, a letter or digit under every '#'.
    finals = c.finals()
    assert all(e.get("unredactedText") is not None for e in finals), describe(c)
    for e in finals:
        text, raw = e["text"], e["unredactedText"]
        assert len(text) == len(raw), (text, raw)
        assert all(a == b or (a == "#" and b.isalnum()) for a, b in zip(text, raw)), (text, raw)
    by_seq = {e["seq"]: e for e in finals}
    assert len(c.webhooks) == len(finals)
    for b in c.webhooks:
        response = b["autotranscribeResponse"]
        assert response["unredactedUtterance"] == [{"text": by_seq[b["sequence"]]["unredactedText"]}], b
        assert response["utterance"] == [{"text": by_seq[b["sequence"]]["text"]}], b
    assert [(m["text"], m.get("unredactedText")) for m in c.messages] == [(e["text"], e["unredactedText"]) for e in finals]

    # Under the masks: the digits the recogniser heard. The card read-out is one long run (the
    # recogniser may miscount a digit or two), and the SSN and security code are there too.
    hidden = [
        "".join(b if a == "#" else " " for a, b in zip(e["text"], e["unredactedText"]))
        for e in finals if e["role"] == "customer"
    ]
    runs = [r for h in hidden for r in digit_runs(h, 3)]
    assert any(len(r) >= 12 and shares(r, card.digits, 6) for r in runs), (runs, describe(c))
    assert any(shares(r, SSN.digits, 6) for r in runs), (runs, describe(c))
    assert any(shares(r, CVV.digits, 3) for r in runs), (runs, describe(c))
    assert sum(len(r) for r in runs) >= 16 + 3 + 9, (runs, describe(c))
    unredacted_rows = [u["unredacted_text"] for u in c.tables["utterances"]]
    assert all(t is not None for t in unredacted_rows)
    assert any(len(r) >= 12 for t in unredacted_rows for r in digit_runs(t, 12))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unredacted_call_delivers_the_digits(app, webhook, calls):
    c = run_call(app, webhook, calls["repeated"], "unredacted")
    print(describe(c))
    assert_heard_the_call(c)
    customer = c.text_of("customer")
    assert "#" not in customer, describe(c)
    assert not any("unredactedText" in e for e in c.events)
    runs = digit_runs(customer, 3)
    assert any(len(r) >= 12 and "1111" in r for r in runs), (runs, describe(c))
    assert any(shares(r, SSN.digits, 6) for r in runs), (runs, describe(c))
    # The searches that find nothing in `redacted` mode find the digits here, in every place: they
    # see what they are meant to see.
    secrets = secrets_of(CARDS["repeated"])
    assert find_leaks([("webhook", b["autotranscribeResponse"]["utterance"][0]["text"]) for b in c.webhooks], secrets)
    assert find_leaks([(f"messages item {i}", m["text"]) for i, m in enumerate(c.messages)], secrets)
    assert find_leaks([(f"event {e['seq']}", e["text"]) for e in c.events if e["type"] == "final"], secrets)
    stored = find_leaks(stored_texts(c), secrets)
    assert any("utterances" in leak for leak in stored) and any("webhook_outbox" in leak for leak in stored), stored
    assert log_leaks(c, secrets), "the log search does not see transcript text in the SQL engine's debug lines (result rows)"
