"""The pause rule end to end: start, speak, stop, speak, start, speak, stop on one Twilio-namespace call.

Media goes into the registry in-process (the Twilio adapter has its own tests) as real synthesised
telephony speech; start and stop go over HTTP to the running app; the real speech engine and the
real redaction engine run. What is said while transcription is off must appear in no event, no
webhook, no message list, no database row and no recording, and the summaries must add up.
"""

from __future__ import annotations

import uuid
import wave

import httpx
import numpy as np
import pytest

from callscribe.audio.codecs import ulaw_decode
from callscribe.calls.events import CallStateEvent, UtteranceEvent
from callscribe.config import load_settings
from callscribe.ingest.twilio import track_specs
from callscribe.testing.speech import resample, say, silence, telephony
from e2e_helpers import WebhookReceiver, dump_database
from servers import running_app

START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"
ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
FORBIDDEN = ("zebra", "giraffe", "pineapple", "volcano")  # said before the first start and during the stop


def phone(text: str) -> np.ndarray:
    """8 kHz int16 of `text` as it would come off a phone line, with a second of silence after."""
    pcm = ulaw_decode(telephony(say(text)))
    return np.concatenate([pcm, silence(1.0, 8000)])


def segment(customer: str | None = None, agent: str | None = None) -> dict[str, np.ndarray]:
    parts = {"inbound": phone(customer) if customer else silence(0.5, 8000),
             "outbound": phone(agent) if agent else silence(0.5, 8000)}
    n = max(len(p) for p in parts.values())
    return {k: np.concatenate([p, np.zeros(n - len(p), np.int16)]) for k, p in parts.items()}


async def feed(media, tracks: dict[str, np.ndarray], chunk: int = 1600) -> None:
    """Interleave both tracks in 200 ms frames, as fast as the loop takes them."""
    n = len(next(iter(tracks.values())))
    for i in range(0, n, chunk):
        for name, pcm in tracks.items():
            await media.audio(name, pcm[i:i + chunk], 8000)


def words_of(ev) -> str:
    parts = [ev.text, ev.unredacted_text or ""] + [w.text for w in ev.words or ()]
    return " ".join(parts).lower()


@pytest.fixture(scope="module")
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine, webhook):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             webhook_url=webhook.url)
    with running_app(settings, engine=engine) as s:
        yield s


def test_start_stop_start_stop_pause_rule(server, engine, webhook, wait_until):
    events: list = []

    async def subscribe():
        server.services.bus.subscribe(events.append)

    server.run(subscribe())
    guid = "CA" + uuid.uuid4().hex
    media = server.run(server.services.registry.media_connected(
        tenant="acme", namespace="twilio", guid=guid, tracks=track_specs(["inbound", "outbound"]), source="test"))
    client = httpx.Client(base_url=server.url, timeout=120)
    base = {"namespace": "twilio", "guid": guid, "customerId": "cust-7", "agentId": "agent-3"}

    before = segment(customer="Zebra and giraffe on a safari.")
    first = segment(customer="I would like to check the status of my recent order.",
                    agent="Of course. Could you tell me your name please?")
    paused = segment(customer="My secret password is pineapple volcano.")
    second = segment(customer="Great, when should I expect the parcel to arrive?")

    server.run(feed(media, before))
    r1 = client.post(START, headers=ACME, json={**base, "autotranscribeParams": {"audioRecordingAllowed": True}})
    assert r1.status_code == 200, r1.text
    server.run(feed(media, first))
    s1 = client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid})
    assert s1.status_code == 200, s1.text
    server.run(feed(media, paused))
    r2 = client.post(START, headers=ACME, json={**base, "autotranscribeParams": {
        "audioRecordingAllowed": True, "redactionOutput": "redacted_and_unredacted"}})
    assert r2.status_code == 200, r2.text
    server.run(feed(media, second))
    s2 = client.post(STOP, headers=ACME, json={"namespace": "twilio", "guid": guid})
    assert s2.status_code == 200, s2.text
    server.run(media.end("hang-up"))

    mine = [e for e in events if e.call.guid == guid]
    # Sequence numbers: 1, 2, 3, ... with no gaps, in publish order.
    assert [e.seq for e in mine] == list(range(1, len(mine) + 1))

    finals = [e for e in mine if isinstance(e, UtteranceEvent) and e.kind == "final"]
    said = " ".join(words_of(e) for e in mine if isinstance(e, UtteranceEvent))
    for word in FORBIDDEN:
        assert word not in said, f"{word!r} was said while transcription was off, yet it appears: {said}"
    customer_text = " ".join(e.text.lower() for e in finals if e.role == "customer")
    agent_text = " ".join(e.text.lower() for e in finals if e.role == "agent")
    assert "status" in customer_text and "order" in customer_text and "arrive" in customer_text, customer_text
    assert "name" in agent_text, agent_text
    assert all(e.external_id == {"customer": "cust-7", "agent": "agent-3"}[e.role] for e in finals)
    assert all(e.unredacted_text is not None for e in finals if e.redaction_output == "redacted_and_unredacted")

    # Summaries add up: 16 bytes per ms, exactly the audio fed while on, and the finals seen.
    for start, stop, seg in ((r1, s1, first), (r2, s2, second)):
        started = start.json()["autotranscribeResponse"]
        stopped = stop.json()["autotranscribeResponse"]
        for role, track in (("customer", "inbound"), ("agent", "outbound")):
            leg = stopped[role]
            assert leg["streamId"] == started[role]["streamId"]
            summary = leg["summary"]
            assert summary["audioDurationMs"] == len(seg[track]) // 8
            assert summary["totalAudioBytes"] == 16 * summary["audioDurationMs"]
            assert summary["transcripts"] == sum(1 for e in finals if e.stream_id == leg["streamId"])
            assert summary["streamingSeconds"] >= 1
    # Times continue the media timeline: the second interval starts after everything fed before it.
    offset = sum(len(s["inbound"]) for s in (before, first, paused)) // 8
    second_ids = {v["streamId"] for v in r2.json()["autotranscribeResponse"].values()}
    assert all(e.start_ms >= offset - 50 for e in finals if e.stream_id in second_ids)

    # Recordings: one per leg per interval, holding exactly the interval's audio and none of the rest.
    saved = [e for e in mine if isinstance(e, CallStateEvent) and e.state == "recording-saved"]
    assert len(saved) == 4
    recorded = []
    for ev in saved:
        with wave.open(str(server.settings.data_dir / ev.data["path"]), "rb") as w:
            assert w.getframerate() == 8000
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        seg = first if ev.data["stream_id"] in {v["streamId"] for v in r1.json()["autotranscribeResponse"].values()} \
            else second
        track = "inbound" if ev.data["role"] == "customer" else "outbound"
        assert np.array_equal(audio, seg[track])
        recorded.append(audio)
    heard = " ".join(s.text for s in engine.transcribe_offline(
        resample(np.concatenate(recorded), 8000, 16000).astype(np.float32) / 32768.0)).lower()
    assert "order" in heard and not any(w in heard for w in FORBIDDEN), heard

    states = [e.state for e in mine if isinstance(e, CallStateEvent)]
    assert states[0] == "media-connected" and states[-1] == "media-ended"
    assert states.count("streaming-started") == 2 and states.count("streaming-stopped") == 2

    # Everything downstream of the registry: webhooks, the messages API and every database row.
    hooks = wait_until(lambda: len(webhook.transcripts(guid)) == len(finals) and webhook.transcripts(guid),
                       "a webhook for every final")
    messages = client.get("/conversation/v1/conversation/messages", headers=ACME, params={"externalId": guid})
    assert messages.status_code == 200 and len(messages.json()["items"]) == len(finals), messages.text
    server.run(server.services.persister.flush())
    rows = dump_database(server.settings.resolved_database_url)
    assert any(r["guid"] == guid for r in rows["calls"])
    for where, text in (("webhooks", str(hooks)), ("messages", messages.text), ("database", str(rows))):
        assert "order" in text.lower(), where  # the words said while on did arrive
        for word in FORBIDDEN:
            assert word not in text.lower(), f"{word!r} (said while stopped) is in the {where}"

    snap = server.services.registry.get_call("acme", guid)
    assert snap["media"] == "ended" and snap["streaming"] is False and snap["intervals"] == 2
    received = {t["name"]: t["received_ms"] for t in snap["tracks"]}
    assert received["inbound"] == sum(len(s["inbound"]) for s in (before, first, paused, second)) // 8
    client.close()
