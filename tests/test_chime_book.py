"""The MeetingBook (api/chime_book.py) on its own: how it closes a meeting's connections and how it
keeps its file."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from callscribe.api import chime_book, chime_file
from callscribe.api.chime_book import MeetingBook
from callscribe.calls.events import EventBus

REQ = {"ClientRequestToken": "t", "ExternalMeetingId": "ext", "MediaRegion": "us-east-1"}


def services(idle_s: float = 300.0, max_s: float = 86400.0, registry=None) -> SimpleNamespace:
    return SimpleNamespace(bus=EventBus(), registry=registry,
                           settings=SimpleNamespace(chime_meeting_idle_s=idle_s, chime_meeting_max_s=max_s))


def test_delete_meeting_closes_its_sockets_together_within_one_deadline(tmp_path, monkeypatch):
    """Each socket's close waits until every socket has begun closing: one after another, the
    first would never finish; all at once, they all do."""
    monkeypatch.setattr(chime_book, "CLOSE_DEADLINE_S", 10.0)

    async def go() -> list[str]:
        book = MeetingBook(tmp_path, services())
        m = book.create_meeting("acme", REQ)
        begun: list[str] = []
        everyone = asyncio.Event()

        def kick_of(name: str):
            async def kick(why: str) -> None:
                begun.append(name)
                if len(begun) == 3:
                    everyone.set()
                await everyone.wait()
            return kick

        for name in ("a", "b", "c"):
            book.watch("acme", m.meeting_id, kick_of(name))
        await asyncio.wait_for(book.delete_meeting(m), 30)  # a guard against a hang, not a timing
        await book.close()
        return begun

    assert sorted(asyncio.run(go())) == ["a", "b", "c"]


def test_a_close_that_hangs_does_not_hold_the_meeting_past_the_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(chime_book, "CLOSE_DEADLINE_S", 0.05)

    async def go() -> bool:
        book = MeetingBook(tmp_path, services())
        m = book.create_meeting("acme", REQ)
        forever = asyncio.Event()

        async def hang(why: str) -> None:
            await forever.wait()

        book.watch("acme", m.meeting_id, hang)
        await asyncio.wait_for(book.delete_meeting(m), 30)  # a guard against a hang, not a timing
        gone = book.get("acme", m.meeting_id) is None
        await book.close()
        return gone

    assert asyncio.run(go())


def test_changes_are_written_once_together_and_read_back(tmp_path):
    async def go() -> tuple[int, MeetingBook]:
        book = MeetingBook(tmp_path, services())
        writes: list[int] = []
        real = book.file.write
        book.file.write = lambda payload: (writes.append(len(payload["meetings"])), real(payload))[1]  # type: ignore[method-assign]
        made = [book.create_meeting("acme", {**REQ, "ClientRequestToken": f"t-{i}"}) for i in range(30)]
        for m in made[:5]:
            book.add_attendee(m, "user", None)
        await book.flush()
        assert writes == [30]
        book.add_attendee(made[0], "user", None)  # the same user again: nothing changed, nothing written
        assert not book.file.dirty
        await book.close()
        return len(writes), book

    count, _ = asyncio.run(go())
    assert count == 1
    again = MeetingBook(tmp_path, services())
    assert len(again._meetings) == 30 and sum(len(m.attendees) for m in again._meetings.values()) == 5
    assert oct((tmp_path / chime_file.FILE).stat().st_mode & 0o777) == "0o600"


def test_a_file_that_cannot_be_parsed_is_kept_aside_not_overwritten(tmp_path, caplog):
    path = tmp_path / chime_file.FILE
    path.write_text('{"meetings": [{"meeting_id": "trunc')
    book = MeetingBook(tmp_path, services())
    kept = list(tmp_path.glob(f"{chime_file.FILE}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == '{"meetings": [{"meeting_id": "trunc'
    assert any(r.levelname == "ERROR" and "corrupt" in r.getMessage() for r in caplog.records)
    book.create_meeting("acme", REQ)  # the next save writes a new file beside the kept one
    assert kept[0].read_text() == '{"meetings": [{"meeting_id": "trunc' and path.exists()


def test_meetings_end_without_media_or_at_their_maximum(tmp_path):
    """Driven with explicit clock values: no timing."""
    live_call = SimpleNamespace(live=True, legs={}, tracks={}, live_tracks=list)
    live_ids: set[str] = set()
    registry = SimpleNamespace(find=lambda tenant, guid, ns: live_call if guid in live_ids else None)

    async def go() -> None:
        book = MeetingBook(tmp_path, services(idle_s=60, max_s=3600, registry=registry))
        quiet = book.create_meeting("acme", {**REQ, "ClientRequestToken": "quiet"})
        busy = book.create_meeting("acme", {**REQ, "ClientRequestToken": "busy"})
        live_ids.add(busy.meeting_id)
        closed: list[str] = []

        async def kick(why: str) -> None:
            closed.append(why)

        book.watch("acme", quiet.meeting_id, kick)
        t0 = max(quiet.created_at, busy.created_at)
        await book._tick(t0 + 30)
        assert book.get("acme", quiet.meeting_id) is quiet  # not idle long enough yet
        await book._tick(t0 + 61)
        assert book.get("acme", quiet.meeting_id) is None and closed and closed[0].startswith("meeting ended")
        await book._tick(t0 + 1800)
        assert book.get("acme", busy.meeting_id) is busy  # media: not idle
        live_ids.clear()  # its last attendee left: idle from the next look
        await book._tick(t0 + 1900)
        assert book.get("acme", busy.meeting_id) is busy
        await book._tick(t0 + 1961)
        assert book.get("acme", busy.meeting_id) is None
        old = book.create_meeting("acme", {**REQ, "ClientRequestToken": "old"})
        live_ids.add(old.meeting_id)
        await book._tick(old.created_at + 3601)  # media all along, but Chime's maximum
        assert book.get("acme", old.meeting_id) is None
        await book.close()

    asyncio.run(go())
