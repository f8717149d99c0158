"""Cluster mode, what crosses between nodes: start parameters, legs, events and registry errors
come back as they were sent (a command carried out elsewhere answers as it would here)."""

from __future__ import annotations

import json

from callscribe.asr.types import Word
from callscribe.calls import registry as reg
from callscribe.calls.events import CallRef, CallStateEvent, StreamSummary, UtteranceEvent
from callscribe.calls.leg import Leg, StreamParams
from callscribe.calls.media import Participant
from callscribe.cluster import wire
from callscribe.redact.policy import RedactionPolicy


def roundtrip(value):
    return json.loads(json.dumps(value))


def test_stream_params_roundtrip():
    params = StreamParams(language="en-GB", detailed_token=True, redaction_output="unredacted", partials=False,
                          surface="listen", participants={"inbound": Participant("customer", "customer", "C", "c-1")},
                          external_ids={"agent": "a-1"}, options={"customer_id": "c-1", "x": [1, 2]},
                          redaction_policy=RedactionPolicy(frozenset({"SSN", "PIN"}), style="label",
                                                           labels=(("SSN", "PII"),)),
                          endpoint_silence_ms=800)
    assert wire.params_from(roundtrip(wire.params_json(params))) == params
    plain = StreamParams()
    assert wire.params_from(roundtrip(wire.params_json(plain))) == plain


def test_legs_keep_role_stream_id_and_summary():
    leg = Leg(Participant("agent", "agent", "", "a-1"), StreamParams())
    leg.transcripts = 3
    back = wire.legs_from(roundtrip(wire.legs_json({"agent": leg})))["agent"]
    assert (back.role, back.id, back.external_id, back.stream_id) == ("agent", "agent", "a-1", leg.stream_id)
    assert back.summary() == leg.summary() and isinstance(back.summary(), StreamSummary)


def test_events_roundtrip():
    ref = CallRef("c1", "acme", "twilio", "CA1")
    final = UtteranceEvent(ref, 7, "final", "customer", "c-1", "s1", 2, 100, 900, "hi ###", "hi 123",
                           (Word("hi", 100, 300, 0.9),), "redacted_and_unredacted", participant="customer",
                           participant_name="Cust", surface="asapp")
    state = CallStateEvent(ref, 8, "streaming-stopped", {"summaries": {"customer": {"transcripts": 1}}}, surface="asapp")
    for event in (final, state):
        assert wire.event_from(roundtrip(wire.event_json(event))) == event


def test_errors_keep_their_class_and_kind():
    for exc in (reg.CallNotFound("g"), reg.AlreadyStarted("g"), reg.MediaEnding("g"), reg.NoCapacity(),
                reg.UnsupportedLanguage("xx"), reg.ShuttingDown(), reg.BadIdentity("too long")):
        back = wire.error_from(roundtrip(wire.error_json(exc)))
        assert type(back) is type(exc) and str(back) == str(exc)
    failed = wire.error_from(roundtrip(wire.error_json(reg.SourceFailed("no stream", "unusable"))))
    assert isinstance(failed, reg.SourceFailed) and failed.kind == "unusable" and str(failed) == "no stream"
    assert type(wire.error_from(roundtrip(wire.error_json(ValueError("boom"))))) is reg.NotReady
