"""The call registry's state machine, with a scripted stand-in for the speech scheduler.

The stand-in pipeline records exactly which audio reached it and emits a final from a worker thread
when told to (or when closed), the way the real LegPipeline does. Speech itself is tested end to end
in test_asapp_pause.py with the real engine.
"""

from __future__ import annotations

import asyncio
import threading
import wave
from concurrent.futures import Future

import numpy as np
import pytest

from callscribe.asr.types import TranscriptEvent, Word
from callscribe.calls import redaction as redaction_mod
from callscribe.calls.events import CallStateEvent, EventBus, UtteranceEvent
from callscribe.calls.leg import StreamParams
from callscribe.calls.media import MediaRefused
from callscribe.calls.registry import (AlreadyStarted, AlreadyStopped, CallNotFound, CallRegistry, MediaEnding,
                                       NoCapacity, UnsupportedLanguage)
from callscribe.calls.media import Participant, TrackSpec
from callscribe.ingest.twilio import track_specs

TWILIO = track_specs(["inbound", "outbound"])
SIPREC = [TrackSpec("0", Participant("customer", "customer")), TrackSpec("1", Participant("agent", "agent"))]


class FakePipeline:
    def __init__(self, on_event, origin_ms: int, partials: bool):
        self.on_event = on_event
        self.origin_ms = origin_ms
        self.fed: list[np.ndarray] = []
        self.closed = False
        self.utterances = 0
        self.hold: threading.Event | None = None  # when set, close() waits for it (a slow last final)
        self.gaps: list[int] = []
        self.backlog_ms = 0.0  # what the real pipeline has queued but not yet through its front end

    @property
    def position_ms(self) -> int:
        return self.origin_ms + sum(len(x) for x in self.fed) // 8

    def feed(self, pcm, rate):
        assert not self.closed
        self.fed.append(np.asarray(pcm).copy())

    def gap(self, ms):
        self.gaps.append(ms)

    def emit(self, text: str, kind: str = "final") -> None:
        """Emit from another thread, as the engine's workers do."""
        n = self.utterances
        if kind == "final":
            self.utterances += 1
        ev = TranscriptEvent(kind, n, self.origin_ms, self.position_ms, text,
                             tuple(Word(w, self.origin_ms, self.origin_ms + 10, 0.9) for w in text.split()))
        t = threading.Thread(target=self.on_event, args=(ev,))
        t.start()
        t.join()

    def close(self) -> Future:
        self.closed = True
        fut: Future = Future()

        def finish():
            if self.hold is not None:
                self.hold.wait(60)
            if self.fed:  # the audio fed before the stop is still transcribed
                self.emit(f"heard {sum(len(x) for x in self.fed)} samples")
            fut.set_result(None)

        threading.Thread(target=finish).start()
        return fut


class FakeScheduler:
    def __init__(self):
        self.admit = True
        self.pipelines: list[FakePipeline] = []

    def can_admit(self, extra_legs: int = 1) -> bool:
        return self.admit

    def open_leg(self, on_event, *, origin_ms: int = 0, partials: bool = True, on_settled=None):
        p = FakePipeline(on_event, origin_ms, partials)
        self.pipelines.append(p)
        return p


class FakeRedactor:
    def redact_final(self, text, words, role=None):
        class R:
            pass

        r = R()
        r.text = "".join("#" if c.isdigit() else c for c in text)
        r.words, r.spans = words, []
        return r

    def mask_partial(self, text, role=None):
        return "".join("#" if c.isdigit() else c for c in text)


@pytest.fixture
def redactor(monkeypatch):
    monkeypatch.setattr(redaction_mod, "_new_call_redactor", lambda: FakeRedactor())


@pytest.fixture
def env(tmp_path):
    class Env:
        pass

    e = Env()
    e.bus = EventBus()
    e.events = []
    e.bus.subscribe(e.events.append)
    e.scheduler = FakeScheduler()
    e.registry = CallRegistry(e.bus, lambda: e.scheduler, tmp_path, languages=lambda: {"en"}, retention_s=60)
    e.data_dir = tmp_path
    return e


def pcm(ms: int, value: int = 1000) -> np.ndarray:
    return np.full(8 * ms, value, dtype=np.int16)


def params(**kw) -> StreamParams:
    kw.setdefault("external_ids", {"customer": "cust-1", "agent": "agent-1"})
    return StreamParams(**kw)


def seqs(events, ref_guid: str):
    return [e.seq for e in events if e.call.guid == ref_guid]


async def test_pause_rule_and_summaries(env, redactor):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="CA1",
                                               tracks=TWILIO, source="test")
    await media.audio("inbound", pcm(500, 1), 8000)  # before any start: counted only
    legs = await env.registry.start_streaming("t", "twilio", "CA1", params())
    assert set(legs) == {"customer", "agent"}
    assert legs["customer"].pipeline.origin_ms == 500  # the leg's timeline continues the media's
    await media.audio("inbound", pcm(1000, 2), 8000)
    await media.audio("outbound", pcm(300, 3), 8000)
    stopped = await env.registry.stop_streaming("t", "twilio", "CA1")
    s = stopped["customer"].summary()
    assert (s.audio_duration_ms, s.total_audio_bytes, s.transcripts) == (1000, 16000, 1)
    assert stopped["agent"].summary().audio_duration_ms == 300
    assert all(leg.pipeline is None for leg in stopped.values())  # engine state freed at the stop

    await media.audio("inbound", pcm(700, 99), 8000)  # while stopped: never transcribed
    legs2 = await env.registry.start_streaming("t", "twilio", "CA1", params())
    assert legs2["customer"].stream_id != legs["customer"].stream_id
    cust2 = legs2["customer"].pipeline
    assert cust2.origin_ms == 2200
    await media.audio("inbound", pcm(200, 4), 8000)
    await env.registry.stop_streaming("t", "twilio", "CA1")

    fed = np.concatenate([x for p in env.scheduler.pipelines for x in p.fed])
    assert 99 not in fed and 1 not in fed  # nothing from before the start or during the stop
    assert len(cust2.fed) == 1
    states = [e.state for e in env.events if isinstance(e, CallStateEvent)]
    assert states == ["media-connected", "streaming-started", "streaming-stopped", "streaming-started",
                      "streaming-stopped"]
    assert seqs(env.events, "CA1") == list(range(1, len(env.events) + 1))
    finals = [e for e in env.events if isinstance(e, UtteranceEvent)]
    assert {f.role for f in finals} == {"customer", "agent"}
    assert all(f.text.startswith("heard ") and "#" in f.text for f in finals)  # redacted digits
    snap = env.registry.get_call("t", "CA1")
    assert snap["streaming"] is False and snap["intervals"] == 2
    assert {t["name"]: t["received_ms"] for t in snap["tracks"]} == {"inbound": 2400, "outbound": 300}


async def test_start_waits_for_media_then_not_found(env):
    with pytest.raises(CallNotFound):
        await env.registry.start_streaming("t", "twilio", "nobody", params(), wait_s=0.05)

    async def connect_later():
        await asyncio.sleep(0.05)
        await env.registry.media_connected(tenant="t", namespace="twilio", guid="late", tracks=TWILIO[:1],
                                           source="test")

    task = asyncio.create_task(connect_later())
    legs = await env.registry.start_streaming("t", "twilio", "late", params(), wait_s=30)
    await task
    assert set(legs) == {"customer"}


async def test_tenants_are_separate(env):
    await env.registry.media_connected(tenant="a", namespace="twilio", guid="G", tracks=TWILIO[:1], source="t")
    with pytest.raises(CallNotFound):
        await env.registry.start_streaming("b", "twilio", "G", params())
    with pytest.raises(CallNotFound):
        await env.registry.stop_streaming("b", "twilio", "G")
    assert env.registry.get_call("b", "G") is None and env.registry.list_calls("b") == []
    assert env.registry.get_call("a", "G")["guid"] == "G"


async def test_participants_from_the_adapter_unless_the_start_names_them(env):
    await env.registry.media_connected(tenant="t", namespace="twilio", guid="g", tracks=TWILIO, source="t")
    legs = await env.registry.start_streaming("t", "twilio", "g", params())
    assert {leg.track.name: (p, leg.external_id) for p, leg in legs.items()} == {
        "inbound": ("customer", "cust-1"), "outbound": ("agent", "agent-1")}
    await env.registry.stop_streaming("t", "twilio", "g")
    swapped = {"inbound": Participant("agent", "agent", external_id="A"),
               "outbound": Participant("customer", "customer", external_id="C")}
    legs = await env.registry.start_streaming("t", "twilio", "g", params(participants=swapped))
    assert {leg.track.name: (p, leg.external_id) for p, leg in legs.items()} == {
        "inbound": ("agent", "A"), "outbound": ("customer", "C")}


async def test_any_number_of_participants_and_late_joiners(env):
    """A meeting: three attendees, one joining after transcription started, one leaving early."""
    people = [TrackSpec(f"a{i}", Participant(f"att-{i}", "attendee", name=f"Person {i}")) for i in range(3)]
    first = await env.registry.media_connected(tenant="t", namespace="meet", guid="m", tracks=people[:2], source="t")
    legs = await env.registry.start_streaming("t", "meet", "m", params())
    assert set(legs) == {"att-0", "att-1"}
    late = await env.registry.media_connected(tenant="t", namespace="meet", guid="m", tracks=people[2:], source="t")
    await env.registry.find("t", "m").joined()
    snap = env.registry.get_call("t", "m")
    assert {leg["participant"] for leg in snap["legs"] if leg["streaming"]} == {"att-0", "att-1", "att-2"}
    await late.audio("a2", pcm(300), 8000)
    await late.end("left")  # one attendee leaves: only that leg closes
    assert set(env.registry.find("t", "m").legs) == {"att-0", "att-1"}
    stopped = await env.registry.stop_streaming("t", "meet", "m")
    assert set(stopped) == {"att-0", "att-1"}
    started = [e for e in env.events if isinstance(e, CallStateEvent) and e.state == "streaming-started"]
    assert started[-1].data["legs"]["att-2"]["name"] == "Person 2"
    await first.end("done")


async def test_late_joiners_respect_capacity_stops_and_restarts(env):
    people = [TrackSpec(f"a{i}", Participant(f"att-{i}", "attendee")) for i in range(5)]
    reg = env.registry

    async def join(i):
        media = await reg.media_connected(tenant="t", namespace="meet", guid="j", tracks=[people[i]], source="t")
        await reg.find("t", "j").joined()
        return media

    def streaming():
        return set(reg.find("t", "j").legs)

    first = await join(0)
    await reg.start_streaming("t", "meet", "j", params())
    env.scheduler.admit = False
    await join(1)  # no capacity: media connected, not transcribed
    assert streaming() == {"att-0"}
    env.scheduler.admit = True
    second = await join(2)
    assert streaming() == {"att-0", "att-2"}
    await reg.stop_streaming("t", "meet", "j", participants=["att-2"])  # stop one of an interval for all
    await second.end("reconnecting")
    await join(2)
    assert streaming() == {"att-0"}  # stopped on purpose: a reconnect does not bring it back
    await reg.start_streaming("t", "meet", "j", params(), participants=["att-2"])  # restarted alone
    await join(3)
    assert streaming() == {"att-0", "att-2", "att-3"}  # the interval is still for everyone

    # A participant who connects while a stop drains does not outlive the stop.
    hold = threading.Event()
    for leg in reg.find("t", "j").legs.values():
        leg.pipeline.hold = hold
    stopping = asyncio.create_task(reg.stop_streaming("t", "meet", "j"))
    await asyncio.sleep(0.05)
    joining = asyncio.create_task(join(4))
    await asyncio.sleep(0.05)
    hold.set()
    await stopping
    await joining
    assert streaming() == set()
    await reg.start_streaming("t", "meet", "j", params())  # and the next start is not refused
    await first.end("done")


class FakeSource:
    """A pulled source: connects its media when started, ends it when stopped."""

    def __init__(self, refuse: str | None = None):
        self.refuse = refuse
        self.media = None
        self.stopped = 0

    async def start(self, registry, *, tenant, namespace, guid):
        if self.refuse:
            raise MediaRefused(self.refuse)
        self.media = await registry.media_connected(tenant=tenant, namespace=namespace, guid=guid,
                                                    tracks=TWILIO, source="pull")

    async def stop(self):
        self.stopped += 1
        if self.media is not None:
            await self.media.end("pull stopped")


async def test_pulled_source_is_started_by_the_start_and_stopped_with_the_call(env):
    from callscribe.calls.registry import SourceFailed

    with pytest.raises(SourceFailed, match="no such stream"):
        await env.registry.start_streaming("t", "pulled", "p0", params(), source=FakeSource("no such stream"))
    assert env.registry.get_call("t", "p0") is None
    env.scheduler.admit = False
    refused = FakeSource()
    with pytest.raises(NoCapacity):
        await env.registry.start_streaming("t", "pulled", "p2", params(), source=refused)
    assert refused.stopped == 1  # the pull the refused start began does not go on
    env.scheduler.admit = True
    source = FakeSource()
    legs = await env.registry.start_streaming("t", "pulled", "p1", params(), source=source)
    assert set(legs) == {"customer", "agent"}
    await source.media.audio("inbound", pcm(100), 8000)
    stopped = await env.registry.stop_streaming("t", "pulled", "p1")
    assert stopped["customer"].summary().audio_duration_ms == 100
    await env.registry.close()
    assert source.stopped == 1 and env.registry.get_call("t", "p1") is None


@pytest.fixture
def no_redactor(monkeypatch):
    monkeypatch.setattr(redaction_mod, "_new_call_redactor", lambda: None)


async def test_hangup_closes_interval_and_stop_reports_it_once(env, no_redactor):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="h", tracks=TWILIO[:1],
                                               source="t")
    await env.registry.start_streaming("t", "twilio", "h", params())
    await media.audio("inbound", pcm(400), 8000)
    await media.end("hang-up")
    states = [e.state for e in env.events if isinstance(e, CallStateEvent)]
    assert states[-2:] == ["streaming-stopped", "media-ended"]
    assert any(isinstance(e, UtteranceEvent) for e in env.events) is False  # redaction unavailable: withheld
    reported = await env.registry.stop_streaming("t", "twilio", "h")
    assert reported["customer"].summary().audio_duration_ms == 400
    with pytest.raises(AlreadyStopped):
        await env.registry.stop_streaming("t", "twilio", "h")
    with pytest.raises(CallNotFound):  # no live media to start
        await env.registry.start_streaming("t", "twilio", "h", params())


async def test_conflicts_capacity_language(env):
    await env.registry.media_connected(tenant="t", namespace="twilio", guid="c", tracks=TWILIO[:1], source="t")
    with pytest.raises(AlreadyStopped):
        await env.registry.stop_streaming("t", "twilio", "c")
    env.scheduler.admit = False
    with pytest.raises(NoCapacity):
        await env.registry.start_streaming("t", "twilio", "c", params())
    env.scheduler.admit = True
    with pytest.raises(UnsupportedLanguage):
        await env.registry.start_streaming("t", "twilio", "c", params(language="fr-FR"))
    await env.registry.start_streaming("t", "twilio", "c", params())
    with pytest.raises(AlreadyStarted):
        await env.registry.start_streaming("t", "twilio", "c", params())
    with pytest.raises(MediaRefused):
        await env.registry.media_connected(tenant="t", namespace="twilio", guid="c", tracks=TWILIO[:1], source="t")
    await env.registry.stop_streaming("t", "twilio", "c")
    env.scheduler.admit = False  # busy now; this call was admitted before: its resume keeps its place
    assert set(await env.registry.start_streaming("t", "twilio", "c", params())) == {"customer"}


async def test_redaction_modes(env, redactor):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="r", tracks=TWILIO[:1],
                                               source="t")
    for mode, detailed in (("unredacted", True), ("redacted_and_unredacted", False), ("redacted", False)):
        await env.registry.start_streaming("t", "twilio", "r", params(redaction_output=mode, detailed_token=detailed))
        env.scheduler.pipelines[-1].emit("card 4111 now", kind="partial")
        for _ in range(500):  # a partial still queued at the stop is dropped: let it through first
            if any(isinstance(e, UtteranceEvent) and e.kind == "partial" and e.redaction_output == mode
                   for e in env.events):
                break
            await asyncio.sleep(0.01)
        env.scheduler.pipelines[-1].emit("card 4111 1111")
        await media.audio("inbound", pcm(20), 8000)
        await env.registry.stop_streaming("t", "twilio", "r")
    utts = [e for e in env.events if isinstance(e, UtteranceEvent) and "card" in e.text]
    by_mode = {(u.redaction_output, u.kind): u for u in utts}
    raw = by_mode[("unredacted", "final")]
    assert raw.text == "card 4111 1111" and raw.words and raw.unredacted_text is None
    both = by_mode[("redacted_and_unredacted", "final")]
    assert both.text == "card #### ####" and both.unredacted_text == "card 4111 1111" and both.words is None
    red = by_mode[("redacted", "final")]
    assert red.text == "card #### ####" and red.unredacted_text is None and red.words is None
    assert by_mode[("redacted", "partial")].text == "card #### now"
    # utterance numbers continue across intervals on the same leg
    finals = [u for u in utts if u.kind == "final"]
    assert [u.utterance for u in finals] == [0, 2, 4]


async def test_recording_only_streaming_audio(env, redactor):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="rec", tracks=TWILIO[:1],
                                               source="t")
    await media.audio("inbound", pcm(300, 7), 8000)
    await env.registry.start_streaming("t", "twilio", "rec", params(audio_recording_allowed=True))
    await media.audio("inbound", pcm(500, 5), 8000)
    await env.registry.stop_streaming("t", "twilio", "rec")
    await media.audio("inbound", pcm(300, 7), 8000)
    saved = [e for e in env.events if isinstance(e, CallStateEvent) and e.state == "recording-saved"]
    assert len(saved) == 1
    with wave.open(str(env.data_dir / saved[0].data["path"]), "rb") as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(audio) == 8 * 500 and set(audio.tolist()) == {5}


async def test_gap_is_skipped_not_filled_and_timestamps_are_session_relative(env):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="gap", tracks=TWILIO[:1],
                                               source="t")
    await env.registry.start_streaming("t", "twilio", "gap", params())
    await media.audio("inbound", pcm(100), 8000, timestamp_ms=0)
    await media.audio("inbound", pcm(100), 8000, timestamp_ms=300)  # 200 ms lost on the way
    await media.audio("inbound", pcm(20), 8000, timestamp_ms=420)  # one 20 ms packet lost: bridged
    pipeline = env.scheduler.pipelines[-1]
    stopped = await env.registry.stop_streaming("t", "twilio", "gap")
    assert stopped["customer"].summary().audio_duration_ms == 220  # what arrived; nothing made up
    assert pipeline.gaps == [200]  # the long gap ends the utterance; the lost packet does not
    assert sum(len(x) for x in pipeline.fed) == 1600 + 160 + 160
    await media.end("drop")
    again = await env.registry.media_connected(tenant="t", namespace="twilio", guid="gap", tracks=TWILIO[:1],
                                               source="t")  # a reconnect rejoins the same call
    await env.registry.start_streaming("t", "twilio", "gap", params())
    assert env.scheduler.pipelines[-1].origin_ms == 440
    await again.audio("inbound", pcm(100), 8000, timestamp_ms=0)
    assert env.registry.get_call("t", "gap")["tracks"][0]["position_ms"] == 540


async def test_sweep_drops_ended_calls(env):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="old", tracks=TWILIO[:1],
                                               source="t")
    await media.end("hang-up")
    import time

    env.registry.sweep(time.monotonic() + 30)
    assert env.registry.get_call("t", "old") is not None
    env.registry.sweep(time.monotonic() + 120)
    assert env.registry.get_call("t", "old") is None


async def test_start_during_hangup_is_409_203_and_stop_waits(env, redactor):
    media = await env.registry.media_connected(tenant="t", namespace="siprec", guid="bye", tracks=SIPREC,
                                               source="t")
    legs = await env.registry.start_streaming("t", "siprec", "bye", params())
    await media.audio("0", pcm(200), 8000)
    hold = threading.Event()
    for leg in legs.values():
        leg.pipeline.hold = hold
    ending = asyncio.create_task(media.end("BYE"))
    await asyncio.sleep(0.05)
    with pytest.raises(MediaEnding):
        await env.registry.start_streaming("t", "siprec", "bye", params())
    stopping = asyncio.create_task(env.registry.stop_streaming("t", "siprec", "bye"))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the hang-up's drain
    hold.set()
    await ending
    reported = await stopping
    assert reported["customer"].summary().audio_duration_ms == 200 and reported["customer"].transcripts == 1


async def test_noise_final_withdraws_its_partial_and_counts_nothing(env, redactor):
    media = await env.registry.media_connected(tenant="t", namespace="twilio", guid="CA9",
                                               tracks=TWILIO[:1], source="test")
    legs = await env.registry.start_streaming("t", "twilio", "CA9", params())
    await media.audio("inbound", pcm(400), 8000)
    pipe = legs["customer"].pipeline
    pipe.emit("so the", kind="partial")
    pipe.emit("")  # the engine decided it was noise: an empty final closes the utterance
    pipe.emit("")  # an empty final with no partial shown: nothing to withdraw
    pipe.emit("words at last")
    for _ in range(200):  # let the call's pump publish them before the stop (a hang guard only)
        if sum(isinstance(e, UtteranceEvent) for e in env.events) == 3:
            break
        await asyncio.sleep(0.01)
    pipe.fed.clear()
    stopped = await env.registry.stop_streaming("t", "twilio", "CA9")
    said = [(e.kind, e.text) for e in env.events if isinstance(e, UtteranceEvent)]
    assert said == [("partial", "so the"), ("partial", ""), ("final", "words at last")]
    assert stopped["customer"].summary().transcripts == 1
    assert seqs(env.events, "CA9") == list(range(1, len(env.events) + 1))


async def test_a_call_past_the_maximum_length_is_ended_whatever_brings_it(env):
    """SIP dialogs and pulled URLs bound no length themselves: the registry ends their media."""
    import time

    env.registry.max_call_s = 60
    source = FakeSource()
    await env.registry.start_streaming("t", "pulled", "long", params(), source=source)
    env.registry.sweep(time.monotonic() + 30)
    await asyncio.sleep(0.05)
    assert env.registry.find("t", "long").live
    env.registry.sweep(time.monotonic() + 61)
    for _ in range(50):
        await asyncio.sleep(0.01)
    call = env.registry.find("t", "long")
    assert not call.live and source.stopped == 1
    assert [e.data["reason"] for e in env.events if getattr(e, "state", "") == "media-ended"] == [
        "longer than the maximum of 60 s"]
