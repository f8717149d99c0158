"""Cutting one leg's 16 kHz audio into utterances from per-frame VAD probabilities.

Pure logic, no model: frames (512 samples, 32 ms) and their speech probabilities go in, "partial"
and "final" cuts come out. An utterance starts when a frame reaches the onset threshold (keeping a
short pre-roll so the first phoneme is not clipped), ends after `endpoint_silence_ms` below the
offset threshold (hysteresis), is force-cut at `max_utterance_ms` at its quietest recent frame, and
is dropped when it has too little speech (clicks, breaths).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

FRAME = 512
RATE = 16000
FRAME_MS = FRAME * 1000 / RATE  # 32 ms


@dataclass
class SegmenterConfig:
    endpoint_silence_ms: int = 600
    max_utterance_ms: int = 15000
    partial_interval_ms: int = 1000
    first_partial_ms: int = 700  # speech needed before the first partial of an utterance
    partials: bool = True
    onset: float = 0.5
    offset: float = 0.35
    # Measured: 200 ms clipped soft onsets ("Hi" -> "I"); with beam-5 finals 300 ms still shortened
    # utterance starts (bench calls: WER 5.7 % / 5.3 % at 8 / 16 kHz), 450 ms 3.7-3.9 % / 3.9-4.1 %.
    preroll_ms: int = 450
    tail_ms: int = 200  # silence kept after the last speech frame
    min_speech_ms: int = 200  # voiced time below which an utterance is a click, not speech
    # An utterance with less voiced time than short_speech_ms ends only after short_hold_ms of silence
    # (when that is longer than the endpoint). Under a short endpoint (a listen client's
    # endpointing=300) a lone word and a pause ("Great, when should ...", "Perfect, thanks ...") was cut
    # off alone: too short, it was dropped as a click or decoded into a loop ("Perfect. Perfect. ...").
    # Measured, engine only, bench/load.py calls at 300 ms: WER greedy 5.1 -> 3.5 %, beam 5.0 -> 2.7 %
    # (600 ms: 3.4 / 2.8 %).
    short_speech_ms: int = 1000
    short_hold_ms: int = 600
    # After this much silence, the utterance as it would be cut at the endpoint is offered for a
    # speculative decode (an idle scheduler then has the final ready when the endpoint comes); 0: off.
    speculative_ms: int = 300


@dataclass
class Cut:
    kind: str  # "partial" | "speculative" (the final this would be, if no speech follows) | "final"
    segment: int  # numbers utterances as the segmenter saw them (dropped ones leave gaps)
    audio: np.ndarray  # float32 16 kHz
    start_sample: int  # from the start of the leg
    trailing_silence_s: float = 0.0  # audio fed after the end of speech when the final was cut
    at_sample: int = 0  # the leg's position (samples) when the cut was made


class Segmenter:
    def __init__(self, config: SegmenterConfig) -> None:
        self.cfg = config
        self._frames_per_ms = 1 / FRAME_MS
        self._preroll: deque[np.ndarray] = deque(maxlen=max(1, round(config.preroll_ms / FRAME_MS)))
        self._sample = 0  # samples consumed so far
        self._segment = 0
        self._in_speech = False
        self._frames: list[np.ndarray] = []
        self._probs: list[float] = []
        self._start = 0
        self._voiced = 0  # frames at or above the onset threshold
        self._silence = 0  # consecutive frames below the offset threshold
        self._last_partial = 0  # frames in the utterance when the last partial was cut

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def settled_sample(self) -> int | None:
        """The sample before which no later utterance can start (an utterance opens with the
        pre-roll still held), or None while one is open."""
        if self._in_speech:
            return None
        return max(0, self._sample - len(self._preroll) * FRAME)

    def push(self, frames: np.ndarray, probs: np.ndarray) -> list[Cut]:
        """`frames` holds len(probs) consecutive 512-sample frames."""
        cuts: list[Cut] = []
        cfg = self.cfg
        endpoint = max(1, round(cfg.endpoint_silence_ms / FRAME_MS))
        hold = max(endpoint, round(cfg.short_hold_ms / FRAME_MS))
        tail = round(cfg.tail_ms / FRAME_MS)
        speculate = max(tail + 1, round(cfg.speculative_ms / FRAME_MS)) if cfg.speculative_ms else 0
        max_frames = max(4, round(cfg.max_utterance_ms / FRAME_MS))
        for i, p in enumerate(probs):
            made = len(cuts)
            frame = frames[i * FRAME:(i + 1) * FRAME]
            p = float(p)
            if not self._in_speech:
                if p >= cfg.onset:
                    self._begin(frame, p)
                else:
                    self._preroll.append(frame)
            else:
                self._frames.append(frame)
                self._probs.append(p)
                if p >= cfg.onset:
                    self._voiced += 1
                self._silence = self._silence + 1 if p < cfg.offset else 0
                short = self._voiced * FRAME_MS < cfg.short_speech_ms
                if self._silence >= (hold if short else endpoint):
                    cut = self._finish(self._silence)
                    if cut:
                        cuts.append(cut)
                elif len(self._frames) >= max_frames:
                    cuts.extend(self._force_cut())
                elif (self._silence == speculate and speculate < endpoint
                      and self._voiced * FRAME_MS >= cfg.min_speech_ms):
                    # Exactly the audio _finish will keep if the silence lasts to the endpoint.
                    keep = len(self._frames) - (self._silence - tail)
                    cuts.append(Cut("speculative", self._segment, np.concatenate(self._frames[:keep]), self._start))
                elif cfg.partials and self._silence == 0:
                    n = len(self._frames)
                    due = cfg.first_partial_ms if self._last_partial == 0 else self._last_partial * FRAME_MS + cfg.partial_interval_ms
                    if n * FRAME_MS >= due and self._voiced * FRAME_MS >= cfg.min_speech_ms:
                        self._last_partial = n
                        cuts.append(Cut("partial", self._segment, np.concatenate(self._frames), self._start))
            self._sample += FRAME
            for cut in cuts[made:]:
                cut.at_sample = self._sample
        return cuts

    def flush(self) -> list[Cut]:
        """End of stream (or close): the utterance in progress ends here."""
        if not self._in_speech:
            return []
        cut = self._finish(self._silence)
        if cut is None:
            return []
        cut.at_sample = self._sample
        return [cut]

    def jump(self, to_sample: int) -> list[Cut]:
        """A discontinuity: the utterance in progress ends here and the next frame is at `to_sample`
        (later words keep their place on the leg's timeline)."""
        cuts = self.flush()
        self._preroll.clear()  # audio from before the gap must not open the next utterance
        self._sample = max(self._sample, to_sample)
        return cuts

    def _begin(self, frame: np.ndarray, p: float) -> None:
        self._in_speech = True
        self._frames = list(self._preroll) + [frame]
        self._probs = [0.0] * len(self._preroll) + [p]
        self._start = self._sample - len(self._preroll) * FRAME
        self._preroll.clear()
        self._voiced = 1
        self._silence = 0
        self._last_partial = 0

    def _finish(self, silent_frames: int) -> Cut | None:
        """Close the utterance; keep `tail_ms` of its trailing silence."""
        tail = round(self.cfg.tail_ms / FRAME_MS)
        keep = len(self._frames) - max(0, silent_frames - tail)
        frames = self._frames[:keep]
        dropped = self._frames[keep:]
        voiced_ms = self._voiced * FRAME_MS
        self._in_speech = False
        self._frames, self._probs = [], []
        for f in dropped[-(self._preroll.maxlen or 1):]:
            self._preroll.append(f)
        segment = self._segment
        self._segment += 1
        if voiced_ms < self.cfg.min_speech_ms or not frames:
            return None
        return Cut("final", segment, np.concatenate(frames), self._start,
                   trailing_silence_s=silent_frames * FRAME_MS / 1000)

    def _force_cut(self) -> list[Cut]:
        """Max length reached: cut at the least speech-like frame of the last third, carry the rest on."""
        n = len(self._frames)
        lo = max(1, n - n // 3)
        probs = np.asarray(self._probs[lo:])
        at = lo + int(np.argmin(probs)) + 1
        head, rest = self._frames[:at], self._frames[at:]
        rest_probs = self._probs[at:]
        segment = self._segment
        self._segment += 1
        cut = Cut("final", segment, np.concatenate(head), self._start)
        self._start += at * FRAME
        self._frames, self._probs = rest, rest_probs
        self._voiced = sum(1 for q in rest_probs if q >= self.cfg.onset)
        self._silence = 0
        self._last_partial = 0
        return [cut]
