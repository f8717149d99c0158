"""The streaming engine end to end: real model, real synthesised speech, fed through LegPipeline."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from callscribe.asr.types import TranscriptEvent
from callscribe.asr.wer import wer
from callscribe.audio import codecs

HANG_GUARD_S = 120  # only stops a broken test from hanging; not a timing assertion


class Collector:
    def __init__(self) -> None:
        self.events: list[TranscriptEvent] = []
        self.cv = threading.Condition()

    def __call__(self, event: TranscriptEvent) -> None:
        with self.cv:
            self.events.append(event)
            self.cv.notify_all()

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        with self.cv:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self.cv.wait(left)

    @property
    def finals(self) -> list[TranscriptEvent]:
        return [e for e in self.events if e.kind == "final"]

    @property
    def partials(self) -> list[TranscriptEvent]:
        return [e for e in self.events if e.kind == "partial"]


def feed(leg, pcm: np.ndarray, rate: int, frame_ms: int = 20) -> None:
    step = rate * frame_ms // 1000
    for i in range(0, len(pcm), step):
        leg.feed(pcm[i:i + step], rate)


class FakeClock:
    """A monotonic clock that moves only when told (the scheduler's `clock`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate, what: str = "the condition") -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def check_order(events: list[TranscriptEvent]) -> None:
    """Finals in utterance order 0, 1, 2...; no partial after the final of its utterance."""
    finals_seen: set[int] = set()
    expected = 0
    for e in events:
        assert e.utterance not in finals_seen, f"{e.kind} after the final of utterance {e.utterance}"
        if e.kind == "final":
            assert e.utterance == expected
            expected += 1
            finals_seen.add(e.utterance)
        assert e.start_ms <= e.end_ms


def transcribe(scheduler, pcm: np.ndarray, rate: int, **kw) -> Collector:
    got = Collector()
    leg = scheduler.open_leg(got, **kw)
    feed(leg, pcm, rate)
    leg.close().result(HANG_GUARD_S)
    check_order(got.events)
    return got


def test_words_come_out_at_16k(scheduler, sentence):
    text, audio = sentence
    got = transcribe(scheduler, audio, 16000, partials=False)
    assert len(got.finals) == 1
    final = got.finals[0]
    assert wer(text, final.text) <= 0.1, final.text
    assert [w.text for w in final.words] and " ".join(w.text for w in final.words) == final.text
    for w in final.words:
        assert 300 <= w.start_ms <= w.end_ms <= len(audio) / 16 + 50
        assert 0.0 <= w.confidence <= 1.0
    assert all(a.start_ms <= b.start_ms for a, b in zip(final.words, final.words[1:]))
    # The utterance spans the speech (0.5 s of silence either side), not the silence.
    assert 250 <= final.start_ms <= 900 and len(audio) / 16 - 1000 <= final.end_ms <= len(audio) / 16


def test_words_come_out_from_8k_mulaw(scheduler, sentence_8k_mulaw):
    text, ulaw = sentence_8k_mulaw
    got = transcribe(scheduler, codecs.ulaw_decode(ulaw), 8000, partials=False)
    assert len(got.finals) == 1 and wer(text, got.finals[0].text) <= 0.15, got.finals[0].text


def test_48k_input_and_origin(scheduler, sentence):
    from callscribe.audio.resample import resample
    from callscribe.audio.codecs import float32_to_int16

    text, audio = sentence
    pcm48 = float32_to_int16(resample(audio, 16000, 48000))
    got = transcribe(scheduler, pcm48, 48000, origin_ms=60_000, partials=False)
    assert wer(text, got.finals[0].text) <= 0.1
    assert 60_250 <= got.finals[0].start_ms <= 60_900


def test_two_utterances_a_second_apart_are_two_finals_in_order(scheduler, speech):
    first, second = "Please hold the line for a moment.", "Your appointment is confirmed for Monday morning."
    a, b = speech.say(first), speech.say(second)
    gap = speech.silence(1.0)
    pcm = np.concatenate([speech.silence(0.3), a, gap, b, speech.silence(0.8)])
    got = transcribe(scheduler, pcm, 16000, partials=False)
    assert [e.utterance for e in got.finals] == [0, 1]
    assert wer(first, got.finals[0].text) <= 0.15 and wer(second, got.finals[1].text) <= 0.15
    a_end = (4800 + len(a)) / 16
    b_start = a_end + 1000
    assert got.finals[0].end_ms <= b_start
    assert abs(got.finals[0].end_ms - a_end) < 500 and abs(got.finals[1].start_ms - b_start) < 500
    assert got.finals[0].end_ms < got.finals[1].start_ms


def test_settled_marks_follow_the_finals_before_them_and_move_through_silence(scheduler, speech):
    # Marks and finals on one ordered record: a mark never precedes a final that starts before it,
    # and silence after the last word keeps moving the mark (segment cutters close segments with it).
    got = Collector()
    leg = scheduler.open_leg(got, partials=False, origin_ms=2000,
                             on_settled=lambda ms: got(TranscriptEvent("settled", -1, ms, ms, "")))  # type: ignore[arg-type]
    words = speech.say("Your appointment is confirmed for Monday morning.")
    feed(leg, np.concatenate([speech.silence(0.5), words, speech.silence(1.0)]), 16000)
    got.wait_for(lambda evs: any(e.kind == "final" for e in evs), "the final")
    feed(leg, speech.silence(6.0), 16000)  # the front end's turns after the final report the marks
    end_of_silence = 2000 + 500 + len(words) / 16 + 7000
    got.wait_for(lambda evs: any(e.kind == "settled" and e.start_ms >= end_of_silence - 1500 for e in evs),
                 "a mark near the end of the silence")
    leg.close().result(HANG_GUARD_S)
    marks = [e.start_ms for e in got.events if e.kind == "settled"]
    assert marks == sorted(marks) and marks[-1] <= end_of_silence
    final = got.finals[0]
    before = [e.start_ms for e in got.events[:got.events.index(final)] if e.kind == "settled"]
    assert all(m <= final.start_ms for m in before)
    assert marks[-1] >= final.end_ms


def test_long_utterance_has_partials_before_its_final(scheduler, speech):
    text = ("I would like to change the delivery address on my account to the new apartment "
            "on Baker Street because we are moving there next week.")
    audio = speech.say(text)
    assert len(audio) > 4.5 * 16000
    got = Collector()
    leg = scheduler.open_leg(got)
    # Feed at the pace results come back: a partial is cut every partial_interval of speech, so
    # waiting for each one keeps the test independent of CPU speed.
    step = 16000
    for i in range(0, 3 * step, step):
        feed(leg, audio[i:i + step], 16000)
    got.wait_for(lambda ev: any(e.kind == "partial" for e in ev), "a first partial")
    feed(leg, audio[3 * step:], 16000)
    feed(leg, speech.silence(1.0), 16000)
    leg.close().result(HANG_GUARD_S)
    check_order(got.events)
    assert got.partials and got.events[-1].kind == "final" and len(got.finals) == 1
    final = got.finals[0]
    assert all(p.utterance == final.utterance for p in got.partials)
    assert wer(text, final.text) <= 0.15, final.text
    first = got.partials[0].text.lower().split()
    assert len(first) >= 3 and set(first[:3]) <= set(final.text.lower().replace(",", "").replace(".", "").split())


@pytest.mark.parametrize("telephony", [False, True], ids=["16k", "8k-mulaw"])
def test_ten_minutes_of_silence_and_line_noise_give_no_words(scheduler, speech, telephony):
    noise = np.concatenate([speech.silence(120), speech.line_noise(240), speech.silence(60),
                            speech.line_noise(180, level_db=-35.0, seed=3)])
    got = Collector()
    leg = scheduler.open_leg(got)
    if telephony:
        pcm, rate = codecs.ulaw_decode(speech.telephony(noise)), 8000
    else:
        pcm, rate = noise, 16000
    feed(leg, pcm, rate, frame_ms=100)  # as fast as possible
    leg.close().result(HANG_GUARD_S)
    assert leg.position_ms == pytest.approx(600_000, abs=50)
    assert [e.text for e in got.events if e.text] == []


def test_close_flushes_the_last_utterance_and_nothing_follows(scheduler, sentence):
    text, audio = sentence
    got = Collector()
    leg = scheduler.open_leg(got)
    feed(leg, audio[: len(audio) - 8000], 16000)  # speech runs up to the end: no endpoint yet
    future = leg.close()
    future.result(HANG_GUARD_S)
    n = len(got.events)
    assert got.finals and wer(text, got.finals[-1].text) <= 0.15
    leg.feed(audio, 16000)  # ignored after close
    assert leg.close() is future
    time.sleep(0.3)
    assert len(got.events) == n


def test_close_with_nothing_pending_completes_without_events(scheduler, speech):
    got = Collector()
    leg = scheduler.open_leg(got)
    feed(leg, speech.silence(1.0), 16000)
    leg.close().result(HANG_GUARD_S)
    assert got.events == [] and leg.backlog_ms == 0


def test_many_legs_share_the_scheduler_and_keep_their_own_words(scheduler, speech):
    texts = [
        "The weather in Paris is sunny today.",
        "Please send the invoice to our accounting team.",
        "My flight to Chicago was delayed by two hours.",
        "We need twelve chairs for the meeting room.",
        "The printer on the third floor is out of paper.",
        "Can you reset my password for the portal?",
    ]
    voices = ["joe", "joe-high"]
    collectors = [Collector() for _ in texts]
    legs = [scheduler.open_leg(c) for c in collectors]
    audios = [np.concatenate([speech.silence(0.4), speech.say(t, voices[i % 2]), speech.silence(0.8)])
              for i, t in enumerate(texts)]
    telephone = [codecs.ulaw_decode(speech.telephony(a)) if i % 3 == 2 else None for i, a in enumerate(audios)]

    def run(i: int) -> None:
        if telephone[i] is not None:
            feed(legs[i], telephone[i], 8000)
        else:
            feed(legs[i], audios[i], 16000)
        legs[i].close().result(HANG_GUARD_S)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD_S)
    keywords = ["paris", "invoice", "chicago", "chairs", "printer", "password"]
    for i, (text, got) in enumerate(zip(texts, collectors)):
        check_order(got.events)
        heard = " ".join(e.text for e in got.finals).lower()
        assert wer(text, heard) <= 0.4, (text, heard)
        assert keywords[i] in heard, (text, heard)
        assert not [k for j, k in enumerate(keywords) if j != i and k in heard], (text, heard)
    stats = scheduler.stats()
    assert stats["finals_queued"] == 0 and stats["workers"] == 2
    assert scheduler.can_admit()


def test_admission_refuses_when_finals_wait_past_half_the_deadline(engine, sentence):
    from callscribe.asr.scheduler import AsrScheduler

    clock = FakeClock()
    sched = AsrScheduler(engine, workers=1, final_deadline_ms=300, clock=clock)  # not started: nothing decodes
    got = Collector()
    leg = sched.open_leg(got, partials=False)
    assert sched.can_admit()
    feed(leg, sentence[1], 16000)  # all at once: its end of speech is due seconds from now
    future = leg.close()
    other = sched.open_leg(Collector(), partials=False)  # an idle server (no legs) always admits
    wait_until(lambda: sched.stats()["finals_queued"] == 1)
    assert not future.done() and sched.can_admit()  # not due yet, so not late yet
    clock.advance(len(sentence[1]) / 16000 + 1)
    assert not sched.can_admit()
    assert sched.admission().reason == "behind"
    sched.start()
    future.result(HANG_GUARD_S)
    assert got.finals and sched.can_admit()
    other.close()
    sched.stop()


def test_stop_releases_close_waiters(engine, sentence):
    from callscribe.asr.scheduler import AsrScheduler

    sched = AsrScheduler(engine, workers=1)
    leg = sched.open_leg(Collector(), partials=False)
    feed(leg, sentence[1], 16000)
    future = leg.close()
    sched.stop(drain_s=0)  # never started: the final cannot be decoded, but nobody hangs
    assert future.done()
