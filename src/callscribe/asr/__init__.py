"""Speech engine: model loading and batched decode (engine), VAD (vad), utterance cutting
(segmenter), per-leg streaming (pipeline), the media front end's worker thread (frontend), the
real-time guard (realtime) and the process-wide scheduler (scheduler).

Interface usable: `AsrScheduler.from_settings(engine, settings).start()`, `can_admit(n)` (or
`admission(n)` for the reason), `open_leg(on_event)`; on the leg: `feed(pcm, rate)` (only queues;
never blocks), `gap(ms)` (a discontinuity: ends the utterance, later times continue after it),
`close()` -> Future, `position_ms`, `overrun` / `ahead_s` (the sender is ahead of real time by more
than the burst allowance: tell it, e.g. ASAPP 4083), `backlog_ms`, `dropped_ms`. `RealTimeGuard`
(realtime.py) is the same check for an edge that has no leg yet. See scheduler.py and pipeline.py.

Event semantics for consumers: per leg, events arrive in order on one of the engine's threads (a scheduler
worker, or the front end when a final takes a speculative result), never the caller's;
`utterance` numbers are 0, 1, 2, ... in order; a partial of an utterance never follows its final.
A final with empty text (and no words) can occur only for an utterance that already had partials:
it means the utterance turned out to be noise, and closes those partials.
"""
