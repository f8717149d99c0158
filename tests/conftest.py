"""Shared fixtures: one loaded speech model per test session, and synthesised speech with known text."""

from __future__ import annotations

import numpy as np
import pytest

from callscribe.testing import speech as _speech


@pytest.fixture(scope="session")
def engine():
    """The bundled tiny.en model, loaded once for the whole session."""
    from callscribe.asr.engine import SpeechEngine, resolve_model_path

    return SpeechEngine(resolve_model_path(None), compute_type="int8", workers=2, threads=1)


@pytest.fixture(scope="session")
def scheduler(engine):
    """A started scheduler with the default settings, shared by tests that do not tune it."""
    from callscribe.asr.scheduler import AsrScheduler
    from callscribe.config import Settings

    sched = AsrScheduler.from_settings(engine, Settings())
    sched.start()
    yield sched
    sched.stop()


@pytest.fixture(scope="session")
def speech():
    """The speech synthesis helpers (say, build_call, telephony, line_noise, silence, CALL_SCRIPTS)."""
    return _speech


SENTENCE = "Thank you for calling customer support. I can help you with your order today."


@pytest.fixture(scope="session")
def sentence() -> tuple[str, np.ndarray]:
    """A clean Piper sentence: (text, int16 16 kHz audio with 0.5 s of silence either side)."""
    audio = _speech.say(SENTENCE, "joe")
    pad = _speech.silence(0.5)
    return SENTENCE, np.concatenate([pad, audio, pad])


@pytest.fixture(scope="session")
def sentence_8k_mulaw(sentence) -> tuple[str, bytes]:
    """The same sentence as 8 kHz mu-law bytes, made by sox."""
    text, audio = sentence
    return text, _speech.telephony(audio)


# --- storage and delivery: databases (SQLite and PostgreSQL) and apps served in a thread -----


import pytest as _pytest


@_pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (tests/pg.py); skipped, saying why, only without the binaries."""
    import pg

    reason = pg.unavailable_reason()
    if reason:
        _pytest.skip(reason)
    with pg.postgres_server() as url:
        yield url


@_pytest.fixture(params=["sqlite", _pytest.param("postgres", marks=_pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'callscribe.db'}"
        return
    import pg

    with pg.fresh_database(request.getfixturevalue("pg_server")) as url:
        yield url


@_pytest.fixture
def wait_until():
    """wait_until(predicate, what): poll until predicate() is truthy; the limit is a hang guard only."""
    from servers import wait_until as wait

    return lambda predicate, what="condition", limit_s=60.0: wait(predicate, what, limit_s)


class _StubEngine:
    """Stands in for the speech model in tests that publish call events themselves."""

    description = "stub engine (storage and delivery tests)"
    languages = frozenset({"en"})


@_pytest.fixture
def start_app(tmp_path):
    """start_app(**settings) -> servers.ServedApp; every app started is stopped at the end of the test.

    Defaults: data dir under tmp_path, SIP off, two API keys: `ka:sa` (tenant `acme`) and
    `kb:sb` (tenant `globex`). The speech model is a stub: these apps get their call events
    published by the test (`app.publish(...)`), not from audio.
    """
    import contextlib

    from servers import running_app

    from callscribe.config import load_settings

    with contextlib.ExitStack() as stack:

        def start(**overrides):
            values = {"data_dir": tmp_path / "data", "sip_port": 0, "api_keys": "ka:sa:acme,kb:sb:globex", "port": 0}
            values.update(overrides)
            return stack.enter_context(running_app(load_settings(**values), engine=_StubEngine(), wait_ready=False))

        yield start


class CallScript:
    """Writes the events the call registry would publish for one call, numbering them as it goes."""

    def __init__(self, guid: str, tenant: str = "acme", namespace: str = "twilio", call_id: str | None = None):
        import uuid

        from callscribe.calls.events import CallRef

        self.ref = CallRef(call_id or "c-" + uuid.uuid4().hex[:12], tenant, namespace, guid)
        self.seq = 0
        self.stream_ids: dict[str, str] = {}
        self.utterances: dict[str, int] = {}
        self.redaction = "redacted"
        self.words = False

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def state(self, state: str, **data):
        from callscribe.calls.events import CallStateEvent

        return CallStateEvent(self.ref, self._next(), state, data)

    def started(self, redaction: str = "redacted", detailed: bool = False, recording: bool = False):
        """streaming-started in the registry's shape: legs by role, and the stream's params."""
        import uuid

        self.redaction, self.words = redaction, detailed
        self.stream_ids = {role: uuid.uuid4().hex for role in ("customer", "agent")}
        params = {"language": "en-US", "redaction_output": redaction, "detailed_token": detailed,
                  "audio_recording_allowed": recording}
        legs = {role: {"stream_id": sid, "external_id": f"{role}-1"} for role, sid in self.stream_ids.items()}
        return self.state("streaming-started", legs=legs, params=params)

    def stopped(self, **summaries):
        """streaming-stopped with role=(total_audio_bytes, audio_duration_ms, streaming_seconds, transcripts)."""
        return self.state("streaming-stopped", summaries={
            role: {"total_audio_bytes": s[0], "audio_duration_ms": s[1], "streaming_seconds": s[2],
                   "transcripts": s[3], "stream_id": self.stream_ids.get(role)} for role, s in summaries.items()})

    def utterance(self, role: str, text: str, kind: str = "final", unredacted: str | None = None):
        from callscribe.asr.types import Word
        from callscribe.calls.events import UtteranceEvent

        n = self.utterances.get(role, 0)
        if kind == "final":
            self.utterances[role] = n + 1
        words = tuple(Word(w, 100 * i, 100 * i + 90, 0.9) for i, w in enumerate(text.split())) if self.words else None
        return UtteranceEvent(self.ref, self._next(), kind, role, f"{role}-1", self.stream_ids.get(role, "s0"), n,
                              1000 * n, 1000 * n + 900, text,
                              unredacted if self.redaction == "redacted_and_unredacted" else None, words,
                              self.redaction)


@_pytest.fixture
def call_script():
    """call_script(guid, tenant=..., namespace=...) -> CallScript."""
    return CallScript
