"""A memories.ai task's transcript cut into 5 s segments (api/memories_segments.py): which words go
to which segment, when a segment is complete, and that a process killed mid-task loses no segment
and sends none twice (rebuilt from the stored finals at the next start, on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from callscribe.api import memories_wire as wire
from callscribe.api.memories_segments import Final, Segments
from callscribe.asr.types import Word
from callscribe.calls.events import CallRef, CallStateEvent, UtteranceEvent
from callscribe.delivery.webhook import WebhookMessage
from callscribe.store import NewOutbox, Store
from callscribe.store.models import OutboxRow


def _final(start_s: float, *words: tuple[str, float, float], speaker: str = "speaker") -> Final:
    ws = tuple(Word(t, int(a * 1000), int(b * 1000), 0.9) for t, a, b in words)
    text = " ".join(w.text for w in ws).capitalize() + "."
    return Final(speaker, int(start_s * 1000), ws[-1].end_ms, text, ws)


def _said(callback: dict) -> list[str]:
    return [w["text"] for w in callback["data"]["transcript"]["words"]]


def _check_grid(callbacks: list[dict]) -> None:
    assert [cb["data"]["segment_index"] for cb in callbacks] == list(range(len(callbacks)))
    for cb in callbacks:
        index, data = cb["data"]["segment_index"], cb["data"]
        assert data["status"] == 0 and data["message"] == "success"
        assert data["segment_start_time"] == f"{5 * index}.0"
        for word in data["transcript"]["words"]:  # each word in the segment its start falls in
            assert 5 * index <= word["start"] < 5 * (index + 1)


def test_words_go_to_the_segment_their_start_falls_in_and_silence_is_a_segment():
    seg = Segments("task-1")
    assert seg.add_final("speaker", _final(0.5, ("hello", 0.5, 0.9), ("there", 1.0, 1.5))) == []  # 0-5 s still open
    # A final across the 5 s boundary completes segment 0 only (it ends at 5.9 s).
    first = seg.add_final("speaker", _final(4.2, ("one", 4.2, 4.5), ("two", 4.6, 4.99), ("three", 5.0, 5.4),
                                            ("four", 5.5, 5.9)))
    assert len(first) == 1 and _said(first[0]) == ["hello", "there", "one", "two"]
    assert first[0]["data"]["transcript"]["text"] == "Hello there. one two"
    assert [u["text"] for u in first[0]["data"]["transcript"]["utterances"]] == ["Hello there.", "one two"]
    # After 11 s of silence the next final completes segments 1 (its words) and 2 (nothing said).
    more = seg.add_final("speaker", _final(17.0, ("later", 17.0, 17.6)))
    assert [cb["data"]["segment_index"] for cb in more] == [1, 2]
    assert _said(more[0]) == ["three", "four"] and more[0]["data"]["transcript"]["utterances"][0]["start_time"] == "5.0"
    assert more[1]["data"]["transcript"] == {"type": "final", "text": "", "words": [], "utterances": []}
    # The media ends at 19.5 s: the last segment is sent, ending with the media.
    last = seg.close(19500)
    assert [cb["data"]["segment_index"] for cb in last] == [3] and _said(last[0]) == ["later"]
    assert last[0]["data"]["segment_end_time"] == "19.5"
    callbacks = first + more + last
    _check_grid(callbacks)
    assert all(cb["data"]["segment_end_time"] == f"{5 * (i + 1)}.0" for i, cb in enumerate(callbacks[:-1]))
    end = seg.end_callback(15, "Stream ended")
    assert end["data"] == {"segment_index": 3, "segment_start_time": "15.0", "segment_end_time": "19.5",
                           "status": 15, "message": "Stream ended", "transcript": None}


def test_a_segment_waits_for_every_leg_and_the_end_sends_the_rest():
    seg = Segments("task-2")
    seg.add_legs(["speaker_0", "speaker_1"])
    assert seg.add_final("speaker_0", _final(1.0, ("left", 1.0, 1.4), speaker="speaker_0")) == []
    assert seg.add_final("speaker_0", _final(11.0, ("again", 11.0, 11.5), speaker="speaker_0")) == []
    sent = seg.add_final("speaker_1", _final(6.0, ("right", 6.0, 6.5), speaker="speaker_1"))
    assert [cb["data"]["segment_index"] for cb in sent] == [0]  # speaker_1 has passed 5 s, not 10 s
    sent += seg.close(12000)
    _check_grid(sent)
    assert [_said(cb) for cb in sent] == [["left"], ["right"], ["again"]]
    assert sent[1]["data"]["transcript"]["words"][0]["speaker"] == "speaker_1"


def test_settled_marks_send_the_segments_of_a_silence_without_a_final():
    seg = Segments("task-s")
    seg.add_legs(["speaker_0", "speaker_1"])
    assert seg.add_final("speaker_0", _final(1.0, ("hello", 1.0, 1.4), speaker="speaker_0")) == []
    assert seg.settle("speaker_0", 16000) == []  # speaker_1 has said nothing of its first 5 s yet
    sent = seg.settle("speaker_1", 12500)
    assert [cb["data"]["segment_index"] for cb in sent] == [0, 1]  # both legs are past 10 s
    assert [_said(cb) for cb in sent] == [["hello"], []]
    assert seg.settle("stranger", 60000) == []  # a leg outside the task's interval moves nothing
    sent += seg.add_final("speaker_1", _final(14.0, ("late", 14.0, 14.5), speaker="speaker_1"))
    _check_grid(sent + seg.close(20000))


def test_a_final_without_word_times_goes_whole_to_the_segment_of_its_start():
    seg = Segments("task-3")
    out = seg.add_final("speaker", Final("speaker", 4000, 7000, "My card is [REDACTED].", None))
    assert [cb["data"]["segment_index"] for cb in out] == [0]  # it ends at 7 s: segment 0 is complete
    out += seg.add_final("speaker", Final("speaker", 11000, 12000, "Thanks.", None)) + seg.close(12500)
    assert [cb["data"]["transcript"]["text"] for cb in out] == ["My card is [REDACTED].", "", "Thanks."]
    assert all(cb["data"]["transcript"]["words"] == [] for cb in out)


def test_no_media_means_no_segment_and_an_end_at_zero():
    seg = Segments("task-4")
    assert seg.close(0) == []
    assert seg.end_callback(16, "Stream source could not be reached")["data"]["segment_index"] == 0


# -- a process killed mid-task ------------------------------------------------------------------------------


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.db.migrate()
    yield s
    s.close()


def _events(call: CallRef) -> list:
    """A task's events as the registry publishes them: streaming-started, then finals."""
    legs = {"speaker": {"participant": "speaker", "role": "speaker", "stream_id": "s1"}}
    events: list = [CallStateEvent(call, 1, "media-connected", {}, surface="memories"),
                    CallStateEvent(call, 2, "streaming-started", {"legs": legs, "params": {}}, surface="memories")]
    finals = [_final(0.5, ("thank", 0.5, 0.8), ("you", 0.8, 1.0)),
              _final(4.5, ("for", 4.5, 4.8), ("calling", 5.05, 5.5)),
              _final(12.0, ("goodbye", 12.0, 12.6))]
    for i, f in enumerate(finals):
        events.append(UtteranceEvent(call, 3 + i, "final", "speaker", "", "s1", i, f.start_ms, f.end_ms, f.text,
                                     words=f.words, redaction_output="unredacted", surface="memories"))
    return events


def _store_as_the_persister_does(store: Store, formatter, events) -> None:
    for event in events:
        made = formatter(event)
        made = [made] if isinstance(made, WebhookMessage) else list(made or ())
        store.calls.save_events([(event, [NewOutbox(m.msg_id, m.ordering_key, m.payload) for m in made])])


def _outbox(store: Store) -> list[tuple[str, dict]]:
    with store.db.sessions() as s:
        return [(r.msg_id, json.loads(r.payload)) for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))]


@pytest.mark.parametrize("stored_finals", [3, 2])
def test_a_task_killed_mid_way_gets_its_missing_segments_and_end_once(store, stored_finals):
    call = CallRef("c-1", "acme", wire.NAMESPACE, "task-k")
    events = _events(call)[:2 + stored_finals]
    _store_as_the_persister_does(store, wire.formatter(lambda tenant, task: 30000.0), events)
    before = _outbox(store)
    assert [p["data"]["segment_index"] for _, p in before] == ([0, 1] if stored_finals == 3 else [0])
    # kill -9: the formatter's memory is gone. The next start closes the call and rebuilds the rest.
    now = datetime.now(timezone.utc)
    interrupted = store.calls.close_interrupted(now)
    assert interrupted == ["c-1"]
    added = wire.recover(store.db, interrupted, now)
    rows = _outbox(store)
    assert added == len(rows) - len(before) and rows[:len(before)] == before
    msg_ids = [m for m, _ in rows]
    assert len(set(msg_ids)) == len(msg_ids)
    *segments, (end_id, end) = [r for r in rows]
    callbacks = [p for _, p in segments]
    _check_grid(callbacks)
    expected = [["thank", "you", "for"], ["calling"], ["goodbye"]][:len(callbacks)]
    assert [_said(cb) for cb in callbacks] == expected
    assert end_id == "msg_c-1_end" and end["data"]["transcript"] is None
    assert end["data"]["status"] == 20 and end["data"]["segment_index"] == len(callbacks) - 1
    # A second start finds nothing left to do: nothing follows the end.
    assert wire.recover(store.db, ["c-1"], now) == 0 and _outbox(store) == rows


def test_the_formatter_ends_a_task_with_its_last_segment_and_nothing_after():
    call = CallRef("c-2", "acme", wire.NAMESPACE, "task-f")
    formatter = wire.formatter(lambda tenant, task: 13000.0 if task == "task-f" else None)
    out = [m for e in _events(call) for m in formatter(e) or []]
    assert [json.loads(m.payload)["data"]["segment_index"] for m in out] == [0, 1]
    ended = formatter(CallStateEvent(call, 6, "media-ended", {"reason": "source:stopped:Stream stopped by user"},
                                     surface="memories"))
    payloads = [json.loads(m.payload) for m in ended]
    assert [p["data"]["segment_index"] for p in payloads] == [2, 2] and _said(payloads[0]) == ["goodbye"]
    assert payloads[0]["data"]["segment_end_time"] == "13.0"
    assert payloads[1]["data"]["transcript"] is None and payloads[1]["data"]["segment_end_time"] == "13.0"
    assert payloads[1]["data"]["status"] == 14 and payloads[1]["data"]["message"] == "Stream stopped by user"
    assert {m.ordering_key for m in out + ended} == {"c-2:task"}  # delivered in order, the end last
    assert len({m.msg_id for m in out + ended}) == 4
    late = UtteranceEvent(call, 7, "final", "speaker", "", "s1", 9, 14000, 14500, "Late.", surface="memories")
    assert formatter(late) is None
