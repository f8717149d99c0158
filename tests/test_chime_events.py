"""The JS SDK TranscriptEvent shapes made from callscribe's utterance events (api/chime_events.py)."""

from __future__ import annotations

from callscribe.api.chime_events import TranscriptShaper, status_frame
from callscribe.api.chime_settings import parse_configuration
from callscribe.api.chime_wire import eventbridge
from callscribe.asr.types import Word
from callscribe.calls.events import CallRef, UtteranceEvent

REF = CallRef("call-1", "acme", "chime", "meeting-1")
ORIGIN = 1_700_000_000_000


def event(kind: str, text: str, words=None, unredacted=None, utterance=0, mode="unredacted") -> UtteranceEvent:
    return UtteranceEvent(call=REF, seq=1, kind=kind, role="attendee", external_id="ann-ext", stream_id="s1",
                          utterance=utterance, start_ms=1000, end_ms=3000, text=text, unredacted_text=unredacted,
                          words=words, participant="att-1", surface="chime", redaction_output=mode)


def settings(**extra):
    return parse_configuration({"EngineTranscribeSettings": {"LanguageCode": "en-US", **extra}})


def test_partials_keep_their_result_id_and_stabilise():
    shaper = TranscriptShaper(lambda pid: ORIGIN)
    medium = settings(EnablePartialResultsStabilization=True, PartialResultsStability="medium")
    first = shaper.frame(event("partial", "the budget"), medium)["transcript"]["results"][0]
    second = shaper.frame(event("partial", "the budget review is"), medium)["transcript"]["results"][0]
    words = (Word(" The", 1000, 1200, 0.9), Word(" budget", 1200, 1600, 0.8), Word(" review.", 1600, 2000, 0.95))
    final = shaper.frame(event("final", "The budget review.", words), medium)["transcript"]["results"][0]
    assert first["resultId"] == second["resultId"] == final["resultId"]
    assert first["isPartial"] and second["isPartial"] and not final["isPartial"]
    assert [i["stable"] for i in first["alternatives"][0]["items"]] == [False, False]  # seen once: not yet
    assert [i["stable"] for i in second["alternatives"][0]["items"]] == [True, False, False, False]
    items = final["alternatives"][0]["items"]
    assert [(i["content"], i["type"]) for i in items] == [("The", "pronunciation"), ("budget", "pronunciation"),
                                                         ("review", "pronunciation"), (".", "punctuation")]
    assert items[1]["startTimeMs"] == ORIGIN + 1200 and items[1]["confidence"] == 0.8
    assert all(i["stable"] for i in items) and final["startTimeMs"] == ORIGIN + 1000
    assert items[0]["attendee"] == {"attendeeId": "att-1", "externalUserId": "ann-ext"}
    other = shaper.frame(event("partial", "next", utterance=1), None)["transcript"]["results"][0]
    assert other["resultId"] != final["resultId"] and "stable" not in other["alternatives"][0]["items"][0]


def test_identification_lists_entities_over_the_words_as_said():
    shaper = TranscriptShaper(lambda pid: ORIGIN)
    words = (Word(" card", 1000, 1300, 0.9), Word(" [CREDIT_DEBIT_NUMBER]", 1300, 1500, 0.7), Word("", 1500, 2400, 0.7),
             Word(" today", 2400, 2800, 0.9))
    frame = shaper.frame(event("final", "card [CREDIT_DEBIT_NUMBER] today", words, unredacted="card 4111 1111 today",
                               mode="redacted_and_unredacted"), settings(ContentIdentificationType="PII"))
    alt = frame["transcript"]["results"][0]["alternatives"][0]
    assert alt["transcript"] == "card 4111 1111 today"
    assert [i["content"] for i in alt["items"]] == ["card", "4111", "1111", "today"]
    assert alt["items"][1]["startTimeMs"] == ORIGIN + 1300 and alt["items"][2]["endTimeMs"] == ORIGIN + 2400
    assert alt["entities"] == [{"category": "PII", "type": "CREDIT_DEBIT_NUMBER", "content": "4111 1111",
                                "confidence": 1.0, "startTimeMs": ORIGIN + 1300, "endTimeMs": ORIGIN + 2400}]


def test_redaction_shows_pii_labels_only():
    shaper = TranscriptShaper(lambda pid: ORIGIN)
    frame = shaper.frame(event("final", "my number is [PII] thanks", mode="redacted"), settings(ContentRedactionType="PII"))
    alt = frame["transcript"]["results"][0]["alternatives"][0]
    assert "[PII]" in [i["content"] for i in alt["items"]]
    assert [(e["content"], "type" in e) for e in alt["entities"]] == [("[PII]", False)]


def test_the_event_decides_redaction_not_the_settings_at_send_time():
    """The meeting's settings changed between the event and its sending: a redacted event stays
    redacted (its original is never read, even if present), an identified one keeps its entities."""
    shaper = TranscriptShaper(lambda pid: ORIGIN)
    redacted = event("final", "card [PII] today", unredacted="card 4111 1111 today", mode="redacted")
    for now in (settings(ContentIdentificationType="PII"), settings(ContentRedactionType="PII"), settings(), None):
        frame = shaper.frame(redacted, now)
        assert "4111" not in repr(frame), frame
        alt = frame["transcript"]["results"][0]["alternatives"][0]
        assert [(e["content"], "type" in e) for e in alt["entities"]] == [("[PII]", False)]
    identified = event("final", "card [CREDIT_DEBIT_NUMBER] today", unredacted="card 4111 1111 today",
                       mode="redacted_and_unredacted")
    alt = shaper.frame(identified, None)["transcript"]["results"][0]["alternatives"][0]
    assert alt["transcript"] == "card 4111 1111 today"
    assert [(e["type"], e["content"]) for e in alt["entities"]] == [("CREDIT_DEBIT_NUMBER", "4111 1111")]


def test_status_and_eventbridge_shapes():
    data = {"type": "failed", "eventTimeMs": ORIGIN, "meetingId": "m-1", "externalMeetingId": "ext",
            "mediaRegion": "us-east-1", "transcriptionRegion": "us-east-1",
            "transcriptionConfiguration": '{"EngineTranscribeSettings":{"LanguageCode":"de-DE"}}', "message": "no"}
    assert status_frame(data) == {"status": {"type": "failed", "eventTimeMs": ORIGIN, "transcriptionRegion": "us-east-1",
                                             "transcriptionConfiguration": data["transcriptionConfiguration"],
                                             "message": "no"}}
    body = eventbridge(data, "acme")
    assert body["source"] == "aws.chime" and body["detail-type"] == "Chime Meeting State Change"
    assert body["detail"]["eventType"] == "chime:TranscriptionFailed" and body["detail"]["message"] == "no"
    assert body["detail"]["meetingId"] == "m-1" and body["time"].endswith("Z")
