"""Speech engine: model loading and batched decode (engine), VAD (vad), utterance cutting
(segmenter), per-leg streaming (pipeline) and the process-wide scheduler (scheduler).

Interface usable: `AsrScheduler.from_settings(engine, settings).start()`, `open_leg(on_event)`,
`LegPipeline.feed(pcm, rate)` / `close()`; see scheduler.py and pipeline.py.

Event semantics for consumers: per leg, events arrive in order on a scheduler worker thread;
`utterance` numbers are 0, 1, 2, ... in order; a partial of an utterance never follows its final.
A final with empty text (and no words) can occur only for an utterance that already had partials:
it means the utterance turned out to be noise, and closes those partials.
"""
