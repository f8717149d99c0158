"""Capacity behaviour of the engine: admission that follows the present, fairness between legs, the
front end off the caller's thread, gaps, and the real-time guard. No timings are asserted."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import httpx
import numpy as np
import pytest

from callscribe.asr.realtime import RealTimeGuard
from callscribe.asr.scheduler import RECENT_S, AsrScheduler
from callscribe.asr.wer import wer
from callscribe.metrics import Metrics
from test_engine_stream import HANG_GUARD_S, Collector, FakeClock, check_order, feed, wait_until

SENTENCES = [
    "Please send the invoice to our accounting team.",
    "My flight to Chicago was delayed by two hours.",
    "The printer on the third floor is out of paper.",
]


def test_real_time_guard_allows_a_burst_and_flags_a_fast_sender():
    clock = FakeClock()
    guard = RealTimeGuard(allowance_s=2.0, clock=clock)
    for _ in range(100):  # 10 s in real time, 100 ms frames
        clock.advance(0.1)
        guard.feed(800, 8000)
    assert not guard.overrun and guard.ahead_s == 0
    guard.feed(8000 * 2, 8000)  # a 2 s burst: inside the allowance
    assert not guard.overrun
    guard.feed(800, 8000)
    assert guard.overrun
    clock.advance(5)  # a pause; unused time is not saved up
    assert guard.advance(2.0) == clock.now and not guard.overrun  # a gap that happened in real time
    guard.feed(8000 * 3, 8000)
    assert guard.overrun


def test_leg_seconds_integrate_open_legs_over_a_window():
    from callscribe.asr.scheduler import LegSeconds

    ls = LegSeconds(0.0)
    ls.set(10.0, 2)  # two legs from t=10
    ls.set(15.0, 4)  # four from t=15
    assert ls.over(0.0, 20.0) == 2 * 5 + 4 * 5
    assert ls.over(12.0, 20.0) == 2 * 3 + 4 * 5
    ls.set(20.0, 0)
    assert ls.over(0.0, 30.0) == 30.0


def test_an_idle_server_admits_after_a_burst_that_ran_late(engine, sentence, caplog):
    clock = FakeClock()
    metrics = Metrics()
    sched = AsrScheduler(engine, workers=2, final_deadline_ms=1500, clock=clock, metrics=metrics)
    bystander = sched.open_leg(Collector(), partials=False)  # stays open: the server is not empty
    burst = [sched.open_leg(Collector(), partials=False) for _ in range(10)]
    for leg in burst:
        feed(leg, sentence[1], 16000, frame_ms=100)
    futures = [leg.close() for leg in burst]
    wait_until(lambda: sched.stats()["finals_queued"] == len(burst), "the burst's finals to queue")
    clock.advance(30)  # nothing decodes: every final runs late
    with caplog.at_level(logging.WARNING, logger="callscribe.asr.scheduler"):
        assert not sched.can_admit()
    assert "behind" in caplog.text
    sched.start()
    try:
        for f in futures:
            f.result(HANG_GUARD_S)
        assert sched.admission().reason == "late" and not sched.can_admit()  # the burst was just now
        refused = metrics.registry.get_sample_value
        assert refused("callscribe_admission_refused_total", {"reason": "behind"}) == 1
        assert refused("callscribe_admission_refused_total", {"reason": "late"}) == 1
        clock.advance(RECENT_S + 1)  # then the server is idle for a while
        assert sched.can_admit(2)
        bystander.close().result(HANG_GUARD_S)
        assert sched.can_admit(2)
    finally:
        sched.stop()


def test_a_fast_leg_cannot_push_back_a_real_time_legs_finals(engine, speech):
    """One leg sends forty times faster than real time beside a real-time leg. The fast one is told it
    overruns (and paced if the model cannot keep up); the real-time leg gets every final, and each of its finals waits for at most
    the batch being decoded when it was queued, not for the fast leg's backlog."""
    sched = AsrScheduler(engine, workers=1, batch_size=2, batch_wait_ms=0)
    order: list[tuple[str, str]] = []  # ("submit" | "final", "rt" | "fast"), in the order they happened
    order_lock = threading.Lock()
    submit = sched._submit_final

    def spy(leg, cut, ordinal, speech_end):
        with order_lock:
            order.append(("submit", names[leg]))
        submit(leg, cut, ordinal, speech_end)

    sched._submit_final = spy  # type: ignore[method-assign]

    def collect(name: str, into: Collector):
        def on_event(event):
            if event.kind == "final":
                with order_lock:
                    order.append(("final", name))
            into(event)
        return on_event

    rt_got, fast_got = Collector(), Collector()
    rt = sched.open_leg(collect("rt", rt_got), partials=False)
    fast = sched.open_leg(collect("fast", fast_got), partials=False)
    names = {rt: "rt", fast: "fast"}
    rt_audio = np.concatenate([np.concatenate([speech.silence(0.5), speech.say(t), speech.silence(1.0)]) for t in SENTENCES])
    fast_audio = np.concatenate([speech.say(t, "joe-high") for t in SENTENCES * 2] + [speech.silence(0.8)])
    done = threading.Event()
    overran = []

    def fast_sender() -> None:
        step = 16000 * 4  # 4 s of audio every 0.1 s: more than the model can keep up with
        pos = 0
        while not done.wait(0.1):
            piece = fast_audio[pos:pos + step]
            pos = (pos + step) % (len(fast_audio) - step)
            fast.feed(piece, 16000)
            overran.append(fast.overrun)

    sched.start()
    sender = threading.Thread(target=fast_sender, daemon=True)
    sender.start()
    try:
        step = 320  # real time, 20 ms frames
        ticker = threading.Event()
        for i in range(0, len(rt_audio), step):
            rt.feed(rt_audio[i:i + step], 16000)
            assert not rt.overrun
            ticker.wait(0.02)
        rt.close().result(HANG_GUARD_S)
    finally:
        done.set()
        sender.join(HANG_GUARD_S)
        fast.close().result(HANG_GUARD_S)
        sched.stop()
    assert any(overran)  # the edge would have been told to close it
    check_order(rt_got.events)
    heard = " ".join(e.text for e in rt_got.finals)
    assert wer(" ".join(SENTENCES), heard) <= 0.2, heard
    assert fast_got.finals  # paced, not starved
    waits = []
    for i, (what, who) in enumerate(order):
        if what == "submit" and who == "rt":
            end = next(j for j in range(i + 1, len(order)) if order[j] == ("final", "rt"))
            waits.append(sum(1 for e in order[i:end] if e == ("final", "fast")))
    print("fast finals decoded while a real-time final waited:", waits)
    assert waits and max(waits) <= sched.batch_size, (waits, order)


def test_gap_ends_the_utterance_and_later_words_keep_their_place(scheduler, speech, sentence):
    got = Collector()
    leg = scheduler.open_leg(got, partials=False, origin_ms=1000)
    audio = sentence[1]
    half = len(audio) // 2  # in the middle of the speech
    feed(leg, audio[:half], 16000)
    leg.gap(5000)
    feed(leg, audio, 16000)
    assert leg.position_ms == 1000 + (half + len(audio)) * 1000 // 16000 + 5000
    leg.close().result(HANG_GUARD_S)
    check_order(got.events)
    first, *rest = got.finals
    gap_start = 1000 + half * 1000 // 16000
    assert first.end_ms <= gap_start + 50
    assert rest and all(e.start_ms >= gap_start + 5000 for e in rest)
    assert wer(sentence[0], " ".join(e.text for e in rest)) <= 0.1


def test_a_real_time_final_can_come_from_its_speculative_decode(engine, sentence):
    """Fed in real time, the utterance is decoded during the endpoint silence; the final is that
    result, and its words are right."""
    sched = AsrScheduler(engine, workers=2)
    sched.start()
    try:
        got = Collector()
        leg = sched.open_leg(got, partials=False)
        pcm = sentence[1]
        tick = threading.Event()
        for i in range(0, len(pcm), 1600):  # 100 ms frames, paced
            leg.feed(pcm[i:i + 1600], 16000)
            tick.wait(0.1)
        leg.close().result(HANG_GUARD_S)
        assert len(got.finals) == 1 and wer(sentence[0], got.finals[0].text) <= 0.1
        assert sched.stats().get("speculative_used", 0) == 1
    finally:
        sched.stop()


def test_feed_returns_before_the_audio_is_processed(scheduler, speech, sentence):
    """The caller's thread only queues: with a whole minute in one frame, feed returns while the front
    end is still working through it."""
    got = Collector()
    leg = scheduler.open_leg(got, partials=False)
    minute = np.concatenate([sentence[1]] * 10)[: 16000 * 25]
    leg.feed(minute, 16000)
    assert leg.backlog_ms > 0
    leg.close().result(HANG_GUARD_S)
    assert leg.backlog_ms == 0 and len(got.finals) >= 3


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, engine):
    from callscribe.config import load_settings
    from servers import running_app

    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme")
    with running_app(settings, engine=engine) as s:
        yield s


def test_healthz_answers_while_1mib_frames_are_being_transcribed(app_server, speech):
    """ASAPP direct WebSocket, 1 MiB frames of 8 kHz speech: /healthz answers while the server still has
    that audio queued for transcription (the event loop is not doing the work)."""
    import websockets

    server = app_server
    talk = np.concatenate([np.concatenate([speech.say(t), speech.silence(0.8)]) for t in SENTENCES])
    pcm8k = speech.resample(talk, 16000, 8000)
    frame = np.resize(pcm8k, 512 * 1024).astype("<i2").tobytes()  # 1 MiB: 64 s of audio
    r = httpx.post(server.url + "/autotranscribe/v1/streaming-url", headers={"asapp-api-id": "ka", "asapp-api-secret": "sa"})
    url = r.json()["streamingUrl"]
    scheduler = server.services.scheduler
    answered = []

    async def go() -> None:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "C-1"}}))
            for _ in range(2):
                await ws.send(frame)
            await asyncio.to_thread(wait_until, lambda: scheduler.stats()["input_backlog_s"] > 0, "audio queued")
            async with httpx.AsyncClient() as client:
                while scheduler.stats()["input_backlog_s"] > 0 and len(answered) < 5:
                    answered.append((await client.get(server.url + "/healthz")).status_code)
            try:  # the server may already have ended the stream for sending faster than real time
                await ws.send(json.dumps({"message": "finishStream"}))
                while json.loads(await asyncio.wait_for(ws.recv(), HANG_GUARD_S))["message"] != "finalResponse":
                    pass
            except websockets.ConnectionClosed:
                pass

    asyncio.run(go())
    assert answered and all(code == 200 for code in answered)
