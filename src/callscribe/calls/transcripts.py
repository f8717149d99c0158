"""What one call publishes: state changes and transcripts, in one sequence.

Engine results arrive on scheduler worker threads and hop onto the event loop through one queue per
call, so that every event of a call gets the next sequence number in the order it is published, and
so a stop can wait until the last final of its interval is out (`drain`). Transcripts are redacted
here, before anything leaves the registry, with one redaction context per call (a card number read
over two turns, or by two participants, is still a card number).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from callscribe.asr.types import TranscriptEvent
from callscribe.calls.events import CallRef, CallStateEvent, EventBus, SettledEvent, UtteranceEvent
from callscribe.calls.leg import Leg
from callscribe.calls.redaction import CallRedaction, Shown

if TYPE_CHECKING:
    from callscribe.metrics import Metrics

log = logging.getLogger(__name__)


class CallEvents:
    def __init__(self, ref: CallRef, bus: EventBus, metrics: "Metrics | None") -> None:
        self.ref = ref
        self.bus = bus
        self.metrics = metrics
        self.redaction = CallRedaction()
        self.seq = 0
        self._loop = asyncio.get_running_loop()
        # Engine results and settled marks (an int: leg ms), in the order the engine gave them.
        self._queue: asyncio.Queue[tuple[Leg, TranscriptEvent | int]] = asyncio.Queue()
        self._pump = asyncio.create_task(self._run_pump(), name=f"call-{ref.call_id}")

    def state(self, state: str, data: dict[str, Any], surface: str) -> None:
        self.seq += 1
        self.bus.publish(CallStateEvent(self.ref, self.seq, state, data, surface=surface))

    def receiver(self, leg: Leg) -> Callable[[TranscriptEvent], None]:
        """The engine's on_event for one leg (called from a worker thread)."""
        return lambda event: self._hop(leg, event)

    def settled_receiver(self, leg: Leg) -> Callable[[int], None]:
        """The engine's on_settled for one leg (called from the front-end thread)."""
        return lambda ms: self._hop(leg, ms)

    def _hop(self, leg: Leg, item: TranscriptEvent | int) -> None:
        """Onto the loop, in the order the engine gave them: results and settled marks share one queue."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (leg, item))
        except RuntimeError:
            pass  # the loop is closing

    async def drain(self) -> None:
        """Return once every engine result that has arrived so far is published."""
        await asyncio.sleep(0)  # let the engine's last hops land in the queue
        await self._queue.join()

    def close(self) -> None:
        self._pump.cancel()

    async def _run_pump(self) -> None:
        while True:
            leg, event = await self._queue.get()
            try:
                if isinstance(event, int):
                    if not leg.closed:
                        self.bus.publish_progress(SettledEvent(self.ref, leg.id, event, leg.params.surface))
                else:
                    await self._publish_transcript(leg, event)
            except Exception:
                log.exception("call %s: publishing a transcript failed", self.ref.call_id)
            finally:
                self._queue.task_done()

    async def _publish_transcript(self, leg: Leg, ev: TranscriptEvent) -> None:
        if leg.closed:
            return  # a leftover of an interval that is over
        mode = leg.params.redaction_output
        utterance = leg.utterance_base + ev.utterance
        # Redaction runs inline: about 0.1 ms a final (measured), cheaper than any hop to a thread pool.
        if ev.kind == "final":
            shown = self.redaction.final(ev.text, ev.words, leg.id, mode, leg.params.detailed_token,
                                         leg.params.redaction_policy)
            if leg.track is not None:
                leg.track.next_utterance = max(leg.track.next_utterance, utterance + 1)
        else:
            if not leg.active:
                return  # partials after a stop are noise
            shown = self.redaction.partial(ev.text, leg.id, mode, leg.params.redaction_policy)
        if shown is None:
            return
        if ev.kind == "final" and not shown.text.strip():
            # Noise after all: withdraw the partial subscribers were shown (an empty partial), so
            # no live view is left with words that never become a final.
            if leg.partial_shown != utterance:
                return
            ev = TranscriptEvent("partial", ev.utterance, ev.start_ms, ev.end_ms, "")
            shown = Shown("")
        leg.partial_shown = utterance if ev.kind == "partial" and shown.text else None
        if ev.kind == "final":
            leg.transcripts += 1
            if self.metrics is not None:
                self.metrics.finals.inc()
        elif self.metrics is not None:
            self.metrics.partials.inc()
        self.seq += 1
        self.bus.publish(UtteranceEvent(
            call=self.ref, seq=self.seq, kind=ev.kind, role=leg.role, external_id=leg.external_id,
            stream_id=leg.stream_id, utterance=utterance, start_ms=ev.start_ms, end_ms=ev.end_ms,
            text=shown.text, unredacted_text=shown.unredacted_text, words=shown.words, redaction_output=mode,
            participant=leg.id, participant_name=leg.participant.name, surface=leg.params.surface))

