"""The JSON of Deepgram's listen API (specs/control-apis.md §D.3): live server messages (Results,
SpeechStarted, UtteranceEnd, Metadata), the pre-recorded response, and words from our utterances.

Times are seconds (floats) from the start of the stream, as Deepgram sends them. `word` is the bare
lower-case word and `punctuated_word` the word as written; the transcript is built from the
punctuated words only when the client asked for punctuate or smart_format. Finals carry the
engine's word timings and confidences (masked like the text under `redact=`). Partials carry no
word timings from the engine, so their words are spread evenly over the partial's span and their
confidence is 0: they are a preview, replaced by the final.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from callscribe import __version__
from callscribe.asr.types import Word
from callscribe.calls.events import UtteranceEvent
from callscribe.api.listen_params import ListenOptions

_PUNCT = ".,?!;:\"'()[]"


@dataclass(frozen=True)
class ModelInfo:
    """What Results and Metadata report: the model name the client asked for, and what runs."""

    name: str
    arch: str

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"callscribe:{self.arch}"))

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": __version__, "arch": self.arch}


def seconds(ms: int | float) -> float:
    return round(ms / 1000.0, 3)


def _bare(text: str) -> str:
    core = text.strip().strip(_PUNCT)
    return (core or text.strip()).lower()


def words_of(ev: UtteranceEvent) -> list[Word]:
    """The event's words; for a partial (no timings from the engine), its text spread over its span."""
    if ev.words:
        return [w for w in ev.words if w.text.strip()]
    tokens = ev.text.split()
    if not tokens:
        return []
    step = max(ev.end_ms - ev.start_ms, 0) / len(tokens)
    return [Word(t, int(ev.start_ms + i * step), int(ev.start_ms + (i + 1) * step), 0.0) for i, t in enumerate(tokens)]


def word_json(w: Word) -> dict[str, Any]:
    return {"word": _bare(w.text), "start": seconds(w.start_ms), "end": seconds(w.end_ms),
            "confidence": round(w.confidence, 4), "punctuated_word": w.text.strip()}


def alternative(ev_text: str, words: Sequence[Word], opts: ListenOptions) -> dict[str, Any]:
    out = [word_json(w) for w in words]
    if opts.punctuate or opts.smart_format:
        transcript = ev_text.strip()
    else:
        transcript = " ".join(w["word"] for w in out)
    confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
    return {"transcript": transcript, "confidence": round(confidence, 4), "words": out}


def results(ev: UtteranceEvent | None, channel: int, opts: ListenOptions, request_id: str, model: ModelInfo, *,
            is_final: bool, speech_final: bool = False, from_finalize: bool = False,
            start_ms: int = 0, end_ms: int = 0) -> dict[str, Any]:
    """A Results message; `ev` None makes an empty one (a Finalize that had nothing to flush)."""
    words = words_of(ev) if ev is not None else []
    start, end = (ev.start_ms, ev.end_ms) if ev is not None else (start_ms, end_ms)
    return {
        "type": "Results", "channel_index": [channel, opts.tracks], "duration": seconds(max(end - start, 0)),
        "start": seconds(start), "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [alternative(ev.text if ev is not None else "", words, opts)]},
        "metadata": {"request_id": request_id, "model_info": model.as_dict(), "model_uuid": model.uuid},
    }


def speech_started(channel: int, opts: ListenOptions, at_ms: int) -> dict[str, Any]:
    return {"type": "SpeechStarted", "channel": [channel, opts.tracks], "timestamp": seconds(at_ms)}


def utterance_end(channel: int, opts: ListenOptions, last_word_end_ms: int) -> dict[str, Any]:
    return {"type": "UtteranceEnd", "channel": [channel, opts.tracks], "last_word_end": seconds(last_word_end_ms)}


def warnings(opts: ListenOptions) -> list[dict[str, str]]:
    """Parameters accepted and not applied, in the shape of Deepgram's response warnings."""
    why = {
        "keyterm": "keyterms are accepted but do not bias recognition on this server",
        "keywords": "keywords are accepted but do not bias recognition on this server",
        "numerals": "numbers are always written as digits on this server",
    }
    return [{"parameter": name, "type": "unsupported",
             "message": why.get(name, f"{name} is not applied on this server")} for name in opts.ignored]


def _created() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def metadata_fields(request_id: str, sha256: str, duration_s: float, opts: ListenOptions, model: ModelInfo,
                    call_id: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "transaction_key": "deprecated", "request_id": request_id, "sha256": sha256, "created": _created(),
        "duration": round(duration_s, 3), "channels": opts.tracks, "models": [model.uuid],
        "model_info": {model.uuid: model.as_dict()},
    }
    if opts.tags:
        out["tags"] = list(opts.tags)
    if opts.ignored:
        out["warnings"] = warnings(opts)
    if call_id is not None:
        out["callscribe_call_id"] = call_id
    return out


def metadata(request_id: str, sha256: str, duration_s: float, opts: ListenOptions, model: ModelInfo,
             call_id: str | None) -> dict[str, Any]:
    """The live Metadata message sent before the server closes."""
    return {"type": "Metadata", **metadata_fields(request_id, sha256, duration_s, opts, model, call_id)}


def prerecorded(finals: dict[int, list[UtteranceEvent]], opts: ListenOptions, request_id: str, sha256: str,
                duration_s: float, model: ModelInfo, call_id: str | None, *, utterances: bool) -> dict[str, Any]:
    """The pre-recorded response: one channel entry per channel, its finals joined into one alternative."""
    channels = []
    for c in range(opts.tracks):
        evs = finals.get(c, [])
        words = [w for ev in evs for w in words_of(ev)]
        text = " ".join(ev.text.strip() for ev in evs if ev.text.strip())
        channels.append({"alternatives": [alternative(text, words, opts)]})
    body: dict[str, Any] = {
        "metadata": metadata_fields(request_id, sha256, duration_s, opts, model, call_id),
        "results": {"channels": channels},
    }
    if utterances:
        items = []
        for c, evs in finals.items():
            for ev in evs:
                alt = alternative(ev.text, words_of(ev), opts)
                items.append({"start": seconds(ev.start_ms), "end": seconds(ev.end_ms), "confidence": alt["confidence"],
                              "channel": c, "transcript": alt["transcript"], "words": alt["words"],
                              "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{request_id}:{c}:{ev.utterance}"))})
        body["results"]["utterances"] = sorted(items, key=lambda u: (u["start"], u["channel"]))
    return body
