"""Genesys AudioHook ingest against the running app: a Python AudioHook client written from the spec
(tests/audiohook_client.py), the real speech engine and synthesised two-voice calls."""

from __future__ import annotations

import asyncio
import threading
import uuid

import httpx
import pytest

from audiohook_client import NULL_UUID, AudioHookClient, duration, interleave, media, seconds, signature_headers
from callscribe.calls.events import CallStateEvent, UtteranceEvent
from callscribe.config import parse_audiohook_keys
from callscribe.ingest import audiohook_auth
from callscribe.testing.speech import build_call, telephony
from servers import running_app

PATH = "/mg-autotranscribe/v1/genesys-audiohook"
START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"
ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}

# The Genesys documentation's example (media-protocols spec §2.1).
DOC_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
DOC_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
DOC_URI = "wss://audiohook.example.com/api/v1/voicebiometrics/ws"
DOC_HEADERS = {"audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
               "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
               "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d", "x-api-key": DOC_KEY}
DOC_SIGNING = {"nonce": "VGhpc0lzQVVuaXF1ZU5vbmNl", "created": 1641013200, "expires": 3282026430}
DOC_SIGNATURE = "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:"

AGENT = "Thank you for calling Northwind support. How can I help you today?"
CUSTOMER = "I would like to check the status of my recent order please."


# -- the signature ----------------------------------------------------------------------------------


def _doc_request(**changes):
    signed = {**DOC_HEADERS, **signature_headers(DOC_URI, DOC_HEADERS, DOC_KEY, DOC_SECRET, **DOC_SIGNING)}
    signed.update(changes)
    return signed


def _verify(headers, secret=DOC_SECRET, now=DOC_SIGNING["created"] + 1, keys=None):
    keys = keys if keys is not None else parse_audiohook_keys(f"{DOC_KEY}:{secret}:acme")
    return audiohook_auth.verify(keys, headers, request_target="/api/v1/voicebiometrics/ws",
                                 authority="audiohook.example.com", now=now, nonces=audiohook_auth.NonceCache())


def test_documented_signature_vector_verifies():
    headers = _doc_request()
    assert headers["signature"] == DOC_SIGNATURE  # our client signs as Genesys does
    result = _verify(headers)
    assert result.key is not None and result.key.tenant == "acme", result.reason
    # The same request, byte for byte as documented, with the header names in another case.
    assert _verify({k.title(): v for k, v in headers.items()} | headers).key is not None


@pytest.mark.parametrize("case", ["tampered header", "old created", "wrong secret", "missing key", "unknown key",
                                  "keyid differs", "no signature", "short nonce", "garbled"])
def test_signature_failures(case):
    headers, secret, now, keys = _doc_request(), DOC_SECRET, DOC_SIGNING["created"] + 1, None
    if case == "tampered header":
        headers["audiohook-session-id"] = str(uuid.uuid4())
    elif case == "old created":
        now = DOC_SIGNING["created"] + 60
    elif case == "wrong secret":
        secret = "V3JvbmdTZWNyZXRXcm9uZ1NlY3JldA=="
    elif case == "missing key":
        del headers["x-api-key"]
    elif case == "unknown key":
        keys = parse_audiohook_keys(f"someone-else:{DOC_SECRET}")
    elif case == "keyid differs":
        headers["signature-input"] = headers["signature-input"].replace(f'keyid="{DOC_KEY}"', 'keyid="other"')
    elif case == "no signature":
        del headers["signature"], headers["signature-input"]
    elif case == "short nonce":
        headers = {**DOC_HEADERS, **signature_headers(DOC_URI, DOC_HEADERS, DOC_KEY, DOC_SECRET,
                                                      **{**DOC_SIGNING, "nonce": "tooShort"})}
    elif case == "garbled":
        headers["signature-input"] = headers["signature-input"].replace(")", "")
    result = _verify(headers, secret, now, keys)
    assert result.key is None and result.reason


def test_a_replayed_nonce_fails():
    nonces = audiohook_auth.NonceCache()
    keys = parse_audiohook_keys(f"{DOC_KEY}:{DOC_SECRET}")
    args = dict(request_target="/api/v1/voicebiometrics/ws", authority="audiohook.example.com",
                now=DOC_SIGNING["created"], nonces=nonces)
    assert audiohook_auth.verify(keys, _doc_request(), **args).key is not None
    assert audiohook_auth.verify(keys, _doc_request(), **args).reason == "signature nonce replayed"


# -- the running app ----------------------------------------------------------------------------------

KEY, SECRET = "callscribe-test-key", "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Rz"


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    from callscribe.config import load_settings

    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme",
                             audiohook_keys=f"{KEY}:{SECRET}:acme,unsigned-key::acme", start_wait_for_media_s=3)
    with running_app(settings, engine=engine) as s:
        yield s


@pytest.fixture(scope="module")
def call_audio():
    """(agent, customer) 8 kHz mu-law of a two-turn call: the agent speaks, then the customer."""
    call = build_call([("agent", AGENT), ("customer", CUSTOMER)], gap_s=1.0)
    agent, customer = telephony(call.tracks["agent"]), telephony(call.tracks["customer"])
    n = min(len(agent), len(customer))
    return agent[:n], customer[:n]


def client(server, **kw) -> AudioHookClient:
    kw.setdefault("api_key", KEY)
    kw.setdefault("secret_b64", SECRET)
    return AudioHookClient(server.ws_url + PATH, **kw)


def collect(server, guid: str) -> list:
    events: list = []

    async def subscribe():
        server.services.bus.subscribe(lambda e: events.append(e) if e.call.guid == guid else None)

    server.run(subscribe())
    return events


def words_of(events, role: str) -> str:
    return " ".join(e.text for e in events if isinstance(e, UtteranceEvent) and e.kind == "final"
                    and e.role == role).lower()


def assert_envelopes(c: AudioHookClient) -> None:
    """Our seq counts 1, 2, 3, ...; every message carries the session id and version 2."""
    assert [m["seq"] for m in c.received] == list(range(1, len(c.received) + 1))
    assert all(m["version"] == "2" and m["id"] == c.session_id for m in c.received)
    assert all(m["clientseq"] <= c.seq for m in c.received)


def test_monitor_call_with_asapp_start_stop_and_pause(server, call_audio, wait_until):
    """AudioHook Monitor: ASAPP start-streaming waits for the media (400-203 rule), the right words
    land on the right roles, a pause stops transcription and a resume does not restart it."""
    agent, customer = call_audio
    guid = str(uuid.uuid4())
    events = collect(server, guid)
    body = {"namespace": "genesysaudiohook", "guid": guid, "customerId": "C-1", "agentId": "A-1"}
    answers: dict = {}
    early = threading.Thread(target=lambda: answers.update(start=httpx.post(server.url + START, headers=ACME,
                                                                             json=body, timeout=30)))
    early.start()  # before the media: the start waits for it

    async def go():
        async with client(server) as c:
            opened = await c.open(guid)
            await asyncio.to_thread(early.join)
            await c.stream(interleave(customer, agent))  # external first, as offered
            await c.send("paused")
            await c.send("ping")
            await c.expect("pong")
            await asyncio.to_thread(wait_until, lambda: any(
                getattr(e, "state", None) == "streaming-stopped" for e in events), "the pause to stop it")
            await c.send("resumed", {"start": c.position, "discarded": "PT2S"})
            await c.send("ping")
            await c.expect("pong")
            snapshot = server.services.registry.get_call("acme", guid, "genesysaudiohook")
            again = await asyncio.to_thread(httpx.post, server.url + START, headers=ACME, json=body, timeout=30)
            closed = await c.close()
            return c, opened, snapshot, again, closed, await c.wait_closed()

    c, opened, snapshot, again, closed, code = asyncio.run(go())
    assert opened["parameters"]["media"] == [media(["external", "internal"])]
    start = answers["start"]
    assert start.status_code == 200 and set(start.json()["autotranscribeResponse"]) == {"customer", "agent"}, start.text
    assert "northwind" in words_of(events, "agent") and "help" in words_of(events, "agent")
    assert "order" in words_of(events, "customer") and "status" in words_of(events, "customer")
    assert "northwind" not in words_of(events, "customer") and "order" not in words_of(events, "agent")
    assert not snapshot["streaming"]  # paused, and the resume did not restart ASAPP's transcription
    assert again.status_code == 200  # a new start does
    assert closed["clientseq"] == c.seq and code == 1000
    assert_envelopes(c)
    assert not c.transcripts()  # a monitor session gets no transcripts back
    states = [e.state for e in events if isinstance(e, CallStateEvent)]
    assert states.count("streaming-started") == 2 and states[-1] == "media-ended", states
    missing = httpx.post(server.url + START, headers=ACME, json={**body, "guid": str(uuid.uuid4())})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "400-203"


def test_connector_inverted_channels_ping_while_decoding(server, call_audio):
    """Transcription Connector with the channel order inverted: transcripts come back on the
    right channel ids, a ping right after the audio is answered before the finals, and `closed`
    comes after the last final."""
    agent, customer = call_audio
    guid = str(uuid.uuid4())
    events = collect(server, guid)

    async def go():
        async with client(server) as c:
            opened = await c.open(guid, offers=[media(["internal", "external"])], language="en-US",
                                  supportedLanguages=True)
            await c.stream(interleave(agent, customer))  # internal first, as negotiated
            await c.send("ping")
            pong = await c.expect("pong")
            closed = await c.close()
            return c, opened, pong, closed, await c.wait_closed()

    c, opened, pong, closed, code = asyncio.run(go())
    assert opened["parameters"]["media"] == [media(["internal", "external"])]
    assert "en-US" in opened["parameters"]["supportedLanguages"]
    finals = [t for t in c.transcripts() if t["isFinal"]]
    by_channel = {ch: " ".join(t["alternatives"][0]["interpretations"][0]["transcript"] for t in finals
                               if t["channelId"] == ch).lower() for ch in (0, 1)}
    assert "northwind" in by_channel[0] and "order" in by_channel[1], by_channel
    assert "order" not in by_channel[0] and "northwind" not in by_channel[1], by_channel
    event_seqs = [m["seq"] for m in c.received if m["type"] == "event" and any(
        e["data"]["isFinal"] for e in m["parameters"]["entities"])]
    assert pong["seq"] < min(event_seqs)  # answered while the finals were still being decoded
    assert closed["seq"] > max(event_seqs)  # flushed before closed
    assert_envelopes(c)
    audio_s = len(agent) / 8000
    for t in finals:
        assert 0 <= seconds(t["offset"]) <= audio_s and 0 < seconds(t["duration"]) <= audio_s
        assert t["alternatives"][0]["languages"] == ["en-US"] and 0 <= t["alternatives"][0]["confidence"] <= 1
    # Partials and the final of an utterance share an id; finals carry the call's text as stored.
    assert {t["id"] for t in c.transcripts()} == {t["id"] for t in finals}
    stored = [e for e in events if isinstance(e, UtteranceEvent) and e.kind == "final"]
    assert len(stored) == len(finals) and {e.surface for e in stored} == {"asapp"}
    assert code == 1000


def test_connector_pause_and_resume(server, call_audio, wait_until):
    """Audio before a pause and after a resume is transcribed, in two intervals; the resumed
    audio is placed after the discarded stretch, so offsets keep Genesys's stream position."""
    agent, customer = call_audio
    guid = str(uuid.uuid4())
    half = len(agent) // 2  # the agent's turn is in the first half, the customer's in the second
    split = next(i for i in range(half - 4000, len(agent)) if customer[i] != 0xFF and customer[i] != 0x7F) - 2000
    events = collect(server, guid)

    async def go():
        async with client(server) as c:
            await c.open(guid, language="en-US")
            await c.stream(interleave(customer[:split], agent[:split]))
            await c.send("paused")
            await c.send("ping")  # answered while the pause waits for the engine's last finals
            await c.expect("pong")
            paused_at = c.samples / 8000
            c.samples += 5 * 8000  # five seconds on hold, not sent
            await c.send("resumed", {"start": duration(paused_at), "discarded": "PT5S"})
            await c.stream(interleave(customer[split:], agent[split:]))
            closed = await c.close()
            return c, paused_at, closed

    c, paused_at, closed = asyncio.run(go())
    finals = [t for t in c.transcripts() if t["isFinal"]]
    text = {ch: " ".join(t["alternatives"][0]["interpretations"][0]["transcript"] for t in finals
                         if t["channelId"] == ch).lower() for ch in (0, 1)}
    states = [(e.state, e.data) for e in events if isinstance(e, CallStateEvent)]
    assert "northwind" in text[1] and "order" in text[0], (text, states, c.received[-3:])
    after = [t for t in finals if t["channelId"] == 0]
    assert after and all(seconds(t["offset"]) >= paused_at + 5 for t in after), after
    states = [e.state for e in events if isinstance(e, CallStateEvent)]
    assert states.count("streaming-started") == 2 and states.count("streaming-stopped") == 2, states
    assert_envelopes(c)


def test_frames_of_any_size_and_a_lost_socket(server, wait_until):
    """Frames that split sample pairs are put back together; a socket lost without `close` ends the
    call's media."""
    guid = str(uuid.uuid4())
    events = collect(server, guid)
    audio = interleave(b"\xff" * 8000, b"\x7f" * 8000)  # one second of stereo silence

    async def go():
        async with client(server) as c:
            await c.open(guid)
            i = 0
            for size in (1, 333, 3201, 7, 1600, 2, 9999):
                await c.send_raw(audio[i:i + size])
                i += size
            await c.send_raw(audio[i:])
            await c.send("ping")
            await c.expect("pong")
            snapshot = server.services.registry.get_call("acme", guid, "genesysaudiohook")
            # the socket goes away without the close transaction
        return snapshot

    snapshot = asyncio.run(go())
    assert {t["name"]: t["received_ms"] for t in snapshot["tracks"]} == {"external": 1000, "internal": 1000}
    ended = wait_until(lambda: [e for e in events if getattr(e, "state", None) == "media-ended"], "media end")
    assert "closed by the peer" in ended[0].data["reason"]


def test_connection_probe(server):
    async def go():
        async with client(server) as c:
            opened = await c.open(NULL_UUID)
            closed = await c.close()
            return c, opened, closed, await c.wait_closed()

    c, opened, closed, code = asyncio.run(go())
    assert opened["type"] == "opened" and len(opened["parameters"]["media"]) == 1
    assert closed["type"] == "closed" and closed["clientseq"] == 2 and code == 1000
    assert server.services.registry.find("acme", NULL_UUID) is None
    assert_envelopes(c)


BIG = "x" * (64 * 1024 + 1)


@pytest.mark.parametrize("case", ["malformed json", "sequence gap", "audio before opened", "text over 64 KiB",
                                  "second open", "wrong version", "unknown type", "session id changes",
                                  "serverseq ahead", "audio while paused", "bad media offer",
                                  "update to an unsupported language"])
def test_protocol_errors_end_only_that_session(server, case):
    async def bad(c: AudioHookClient):
        if case == "audio before opened":
            return await c.audio(b"\xff" * 320)
        if case == "bad media offer":
            return await c.send("open", {"organizationId": c.organization_id, "conversationId": str(uuid.uuid4()),
                                         "participant": {}, "media": [media(["external"], "OPUS", 48000)]})
        if case == "update to an unsupported language":  # refused, not acknowledged and then ignored
            await c.open(language="en-US")
            return await c.send("update", {"language": "xx-YY"})
        await c.open()
        if case == "malformed json":
            await c.send_raw('{"version": "2", "type": ')
        elif case == "sequence gap":
            c.seq += 1
            await c.send("ping")
        elif case == "text over 64 KiB":
            await c.send("ping", {"padding": BIG})
        elif case == "second open":
            await c.send("open", {"organizationId": c.organization_id, "conversationId": str(uuid.uuid4()),
                                  "participant": {}, "media": [media(["external"])]})
        elif case == "wrong version":
            await c.send("ping", version="1")
        elif case == "unknown type":
            await c.send("dance")
        elif case == "session id changes":
            await c.send("ping", id=str(uuid.uuid4()))
        elif case == "serverseq ahead":
            await c.send("ping", serverseq=99)
        elif case == "audio while paused":
            await c.send("paused")
            await c.audio(b"\xff" * 320)

    async def go():
        async with client(server) as other:
            await other.open(str(uuid.uuid4()))
            async with client(server) as c:
                await bad(c)
                disconnect = await c.expect("disconnect", timeout=30)
                await c.send("close", {"reason": "disconnect"})
                closed = await c.expect("closed", timeout=30)
                code = await c.wait_closed()
            await other.send("ping")
            pong = await other.expect("pong")
            await other.close()
            return disconnect, closed, code, pong

    disconnect, closed, code, pong = asyncio.run(go())
    assert disconnect["parameters"]["reason"] == "error" and disconnect["parameters"]["info"], disconnect
    assert closed["type"] == "closed" and code is not None and code != 1011
    assert pong["type"] == "pong"


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "tampered header", "old created", "unsigned",
                                  "missing header", "organization mismatch"])
def test_unauthorized_upgrades_get_disconnect(server, case):
    kw: dict = {}
    if case == "wrong secret":
        kw["secret_b64"] = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA=="
    elif case == "unknown key":
        kw["api_key"] = "nobody"
    elif case == "tampered header":
        kw["header_overrides"] = {"audiohook-correlation-id": str(uuid.uuid4())}
    elif case == "old created":
        kw["sign_overrides"] = {"created": 1641013200}
    elif case == "unsigned":
        kw["signed"] = False
    elif case == "missing header":  # a key that needs no signature, so only the header is wrong
        kw.update(api_key="unsigned-key", secret_b64=None, header_overrides={"audiohook-session-id": ""})

    async def go():
        async with client(server, **kw) as c:
            if case == "organization mismatch":
                await c.send("open", {"organizationId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4()),
                                      "participant": {}, "media": [media(["external", "internal"])]})
            else:
                await c.send("open", {"organizationId": c.organization_id, "conversationId": str(uuid.uuid4()),
                                      "participant": {}, "media": [media(["external", "internal"])]})
            disconnect = await c.expect("disconnect", timeout=30)
            await c.send("close", {"reason": "disconnect"})
            await c.expect("closed", timeout=30)
            return disconnect, await c.wait_closed()

    disconnect, code = asyncio.run(go())
    assert disconnect["parameters"]["reason"] == "unauthorized", disconnect
    assert code != 1000


def test_unsigned_key_without_secret_is_accepted(server):
    async def go():
        async with client(server, api_key="unsigned-key", secret_b64=None) as c:
            await c.open(NULL_UUID)
            return await c.close()

    assert asyncio.run(go())["type"] == "closed"


@pytest.mark.parametrize("value", ["key:not*base64!", "key:c2VjcmV0:acme:extra", ":c2VjcmV0"])
def test_bad_keys_setting_is_one_line_without_the_secret(value):
    from callscribe.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as err:
        load_settings(audiohook_keys=value)
    message = str(err.value)
    assert message.startswith("CALLSCRIBE_AUDIOHOOK_KEYS:") and "\n" not in message
    assert "base64!" not in message and "c2VjcmV0" not in message
