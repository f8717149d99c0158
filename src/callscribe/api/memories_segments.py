"""A memories.ai-style task's transcript cut into its 5 s segments, one callback each.

Segment N covers [5N, 5N+5) s of the source's timeline (the media received, on one clock for all
channels). Every segment from 0 up to the end of the media gets exactly one callback, in order,
with no gaps: a segment in which nobody spoke is a callback with an empty transcript, so a receiver
can tell "silence" from "lost" and bill or display the timeline without holes.

Which segment a word goes to: the one its start falls in. A final crossing a boundary is split at
its words; each piece (an entry of `utterances`) carries the final's own text when all its words
are in the segment, else the text of the piece's words. A final without word timings (a redacting
task) goes whole to the segment of its start.

When a segment is sent: once no later final can put a word into it. Each leg's finals come in time
order and the next one starts at or after the end of the previous one, so a final of a leg ending
at E says that leg will add nothing before E; a segment is complete when every leg of the task has
passed its end, or when the media has ended. Through a silence, the engine's settled marks (about
one a second per leg, after the finals before them) move a leg on without a final, so the silent
segments go out on time too.

Durability: the formatter (api/memories_wire.py) runs in the persister, so the callbacks a final
completes are stored in the outbox in the same transaction as that final; the assembly state held
here is only a cache of what is stored. After a kill -9 the next start rebuilds the segments not yet
sent from the stored finals (`recover_interrupted`): the outbox says which were sent (their
`webhook-id` is `msg_<call>_seg<N>`), so none is lost or sent twice, and the task's end callback
closes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import select

from callscribe.asr.types import Word
from callscribe.delivery.webhook import encode
from callscribe.store.db import Database
from callscribe.store.models import Call, OutboxRow, Utterance

SEGMENT_MS = 5000
STATUS_OK = 0


def seconds(ms: float) -> str:
    """Seconds as the seed writes segment times: a string ("15.0", "17.42")."""
    text = f"{ms / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def segment_of(ms: float) -> int:
    return int(max(0, ms) // SEGMENT_MS)


def callback(task_id: str, index: int, start_ms: float, end_ms: float, status: int, message: str,
             transcript: dict[str, Any] | None) -> dict[str, Any]:
    """Seed 002's callback envelope, for segments and for the end alike."""
    return {"code": 200, "message": "SUCCESS", "task_id": task_id, "data": {
        "segment_index": index, "segment_start_time": seconds(start_ms), "segment_end_time": seconds(end_ms),
        "status": status, "message": message, "transcript": transcript}}


@dataclass(frozen=True)
class Final:
    """What a segment needs of a final utterance (from a live event or a stored row)."""

    speaker: str
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] | None


@dataclass
class _Piece:
    speaker: str
    text: str
    start_ms: int
    end_ms: int
    words: list[Word] = field(default_factory=list)


def split(final: Final) -> dict[int, _Piece]:
    """The final's pieces by segment index (the rule above)."""
    if not final.words:
        return {segment_of(final.start_ms): _Piece(final.speaker, final.text, final.start_ms, final.end_ms)}
    pieces: dict[int, _Piece] = {}
    for word in final.words:
        index = segment_of(word.start_ms)
        piece = pieces.get(index)
        if piece is None:
            piece = pieces[index] = _Piece(final.speaker, "", word.start_ms, word.end_ms)
        piece.words.append(word)
        piece.end_ms = max(piece.end_ms, word.end_ms)
    if len(pieces) == 1:
        (piece,) = pieces.values()
        piece.text = final.text
    else:
        for piece in pieces.values():
            piece.text = " ".join(w.text.strip() for w in piece.words if w.text.strip())
    return pieces


class Segments:
    """One task's segments: finals in, the callbacks of the segments they complete out.

    `first_index` is the first segment not sent yet (0 for a live task; more when rebuilding)."""

    def __init__(self, task_id: str, first_index: int = 0) -> None:
        self.task_id = task_id
        self.next_index = first_index
        self._pieces: dict[int, list[_Piece]] = {}
        self._marks: dict[str, int] = {}  # leg -> end of its latest final (nothing of it comes before)
        # (index, start, end) of the last segment sent; a rebuilt task's earlier ones were full segments
        self.last: tuple[int, float, float] | None = None
        if first_index > 0:
            self.last = (first_index - 1, float((first_index - 1) * SEGMENT_MS), float(first_index * SEGMENT_MS))

    def add_legs(self, legs: Iterable[str]) -> None:
        for leg in legs:
            self._marks.setdefault(leg, 0)

    def add_final(self, leg: str, final: Final) -> list[dict[str, Any]]:
        """Take a final of `leg`; the callbacks of the segments it completes."""
        self._marks[leg] = max(self._marks.get(leg, 0), final.end_ms)
        if final.text.strip():
            for index, piece in split(final).items():
                if index >= self.next_index:  # earlier segments were sent before a restart
                    self._pieces.setdefault(index, []).append(piece)
        return self._complete()

    def settle(self, leg: str, until_ms: int) -> list[dict[str, Any]]:
        """`leg` will add nothing before `until_ms` (the engine's settled mark during a silence); the
        callbacks of the segments that completes."""
        if leg not in self._marks:
            return []  # not a leg of this task's interval
        self._marks[leg] = max(self._marks[leg], until_ms)
        return self._complete()

    def _complete(self) -> list[dict[str, Any]]:
        done = min(self._marks.values()) // SEGMENT_MS  # segments below this index are complete
        return [self._send(self.next_index, None) for _ in range(self.next_index, done)]

    def close(self, media_ms: float) -> list[dict[str, Any]]:
        """The media ended after `media_ms`: the callbacks of every segment not sent yet, the last
        one ending with the media."""
        last = max([segment_of(media_ms - 1)] if media_ms > 0 else [], default=-1)
        last = max([last, *self._pieces]) if self._pieces else last
        out = []
        while self.next_index <= last:
            end = media_ms if self.next_index == last else None
            out.append(self._send(self.next_index, end))
        return out

    def end_callback(self, status: int, message: str) -> dict[str, Any]:
        """The task's last callback: the last segment's place, no transcript."""
        index, start, end = self.last if self.last is not None else (0, 0.0, 0.0)
        return callback(self.task_id, index, start, end, status, message, None)

    def _send(self, index: int, end_ms: float | None) -> dict[str, Any]:
        start = index * SEGMENT_MS
        end = (index + 1) * SEGMENT_MS if end_ms is None else max(float(start), min(float(end_ms), start + SEGMENT_MS))
        pieces = sorted(self._pieces.pop(index, []), key=lambda p: (p.start_ms, p.speaker))
        words = sorted(((p.speaker, w) for p in pieces for w in p.words), key=lambda sw: sw[1].start_ms)
        transcript = {
            "type": "final",
            "text": " ".join(p.text.strip() for p in pieces if p.text.strip()),
            "words": [{"text": w.text.strip(), "start": w.start_ms / 1000, "end": w.end_ms / 1000,
                       "confidence": w.confidence, "speaker": speaker} for speaker, w in words],
            "utterances": [{"speaker": p.speaker, "text": p.text.strip(), "start_time": seconds(p.start_ms),
                            "end_time": seconds(p.end_ms)} for p in pieces],
        }
        self.next_index = index + 1
        self.last = (index, float(start), end)
        return callback(self.task_id, index, start, end, STATUS_OK, "success", transcript)


def segment_msg_id(call_id: str, index: int) -> str:
    return f"msg_{call_id}_seg{index}"


def end_msg_id(call_id: str) -> str:
    return f"msg_{call_id}_end"


def task_key(call_id: str) -> str:
    """One ordering key per task: its callbacks are delivered in order, the end last."""
    return f"{call_id}:task"


def sent_index(msg_ids: Sequence[str], call_id: str) -> int:
    """The first segment index not among the task's stored callbacks."""
    prefix = f"msg_{call_id}_seg"
    sent = [int(m[len(prefix):]) for m in msg_ids if m.startswith(prefix) and m[len(prefix):].isdigit()]
    return max(sent, default=-1) + 1


def recover_interrupted(db: Database, call_ids: Sequence[str], when: datetime, namespace: str,
                        status: int, message: str) -> int:
    """For each call of `namespace` among `call_ids` (left open by a process that died): store the
    callbacks of the segments its stored finals fill that were not sent, then its end callback.
    Runs on the store's writer thread at start, before the dispatcher; the number of rows added.
    The media's length died with the process: the rebuilt timeline ends with the last stored final."""
    added = 0
    with db.sessions.begin() as s:
        for call in s.scalars(select(Call).where(Call.call_id.in_(list(call_ids)), Call.namespace == namespace)):
            key = task_key(call.call_id)
            msg_ids = list(s.scalars(select(OutboxRow.msg_id).where(OutboxRow.ordering_key == key)))
            if end_msg_id(call.call_id) in msg_ids:
                continue  # ended before the crash: nothing follows its end callback
            segments = Segments(call.guid, sent_index(msg_ids, call.call_id))
            payloads: list[dict[str, Any]] = []
            media_ms = 0
            for u in s.scalars(select(Utterance).where(Utterance.call_id == call.call_id).order_by(Utterance.seq)):
                words = tuple(Word(**w) for w in u.words) if u.words is not None else None
                payloads += segments.add_final("", Final(u.participant, u.start_ms, u.end_ms, u.text, words))
                media_ms = max(media_ms, u.end_ms)
            payloads += segments.close(media_ms)
            messages = [(segment_msg_id(call.call_id, p["data"]["segment_index"]), p) for p in payloads]
            messages.append((end_msg_id(call.call_id), segments.end_callback(status, message)))
            for msg_id, payload in messages:
                s.add(OutboxRow(msg_id=msg_id, ordering_key=key, payload=encode(payload), created_at=when,
                                attempts=0, next_attempt_at=when))
            added += len(messages)
    return added
