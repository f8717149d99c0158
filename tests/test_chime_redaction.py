"""Chime's ContentRedactionType and ContentIdentificationType on callscribe's redaction: an attendee
reads a card number; with redaction the meeting socket shows "[PII]" and no digits, with
identification the words as said and an entity of type CREDIT_DEBIT_NUMBER over them."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

import numpy as np
import pytest

from callscribe.config import load_settings
from callscribe.testing.speech import say, silence
from chime_helpers import KEY, SECRET, TENANT, Subscriber, chime_client, stream_pcm
from servers import running_app, wait_until

SAID = "My card number is 4111 1111 1111 1111 for the travel booking."


def long_digit_runs(text: str) -> list[str]:
    return re.findall(r"\d{4,}", re.sub(r"(?<=\d)[\s,.-]+(?=\d)", "", text))


@pytest.mark.parametrize("mode", ["ContentRedactionType", "ContentIdentificationType"])
def test_card_number_redacted_or_identified(tmp_path, engine, mode):
    settings = load_settings(data_dir=tmp_path, sip_port=0, api_keys=f"{KEY}:{SECRET}:{TENANT}")
    audio = np.concatenate([silence(0.5), say(SAID, "joe"), silence(1.5)])
    with running_app(settings, engine=engine) as server:
        chime = chime_client(server)
        meeting = chime.create_meeting(ClientRequestToken=f"pii-{mode}", MediaRegion="us-east-1",
                                       ExternalMeetingId="payments")["Meeting"]
        mid = meeting["MeetingId"]
        attendee = chime.create_attendee(MeetingId=mid, ExternalUserId="payer")["Attendee"]
        sub = Subscriber(f"{meeting['MediaPlacement']['SignalingUrl']}?token={quote(attendee['JoinToken'])}")
        assert sub.opened.wait(30) and not sub.closed.is_set()
        chime.start_meeting_transcription(MeetingId=mid, TranscriptionConfiguration={"EngineTranscribeSettings": {
            "LanguageCode": "en-US", mode: "PII", "PiiEntityTypes": "CREDIT_DEBIT_NUMBER,SSN"}})
        url = f"{meeting['MediaPlacement']['AudioHostUrl']}?token={quote(attendee['JoinToken'])}"
        asyncio.run(stream_pcm(url, audio))
        finals = wait_until(lambda: [r for r in sub.finals() if "card" in r["alternatives"][0]["transcript"].lower()],
                            "the final with the card number")
        alt = finals[0]["alternatives"][0]
        entities = alt["entities"]
        assert entities and all(e["category"] == "PII" for e in entities), alt
        if mode == "ContentRedactionType":
            assert "[PII]" in alt["transcript"] and not long_digit_runs(alt["transcript"]), alt["transcript"]
            assert any(i["content"] == "[PII]" for i in alt["items"])
            for r in sub.results():  # partials too
                assert not long_digit_runs(r["alternatives"][0]["transcript"]), r
            assert all(e["content"] == "[PII]" and "type" not in e for e in entities)
        else:
            assert long_digit_runs(alt["transcript"]), alt["transcript"]
            cards = [e for e in entities if e.get("type") == "CREDIT_DEBIT_NUMBER"]
            assert cards and long_digit_runs(cards[0]["content"]), entities
            assert "[" not in alt["transcript"]
        chime.delete_meeting(MeetingId=mid)
        assert sub.closed.wait(30)
