"""The webhook body of a final utterance, its Standard Webhooks signature, and the signing secret.

Body (ASAPP's shape, plus fields of our own that ASAPP clients ignore)::

    {"type": "transcript",
     "externalConversationId": "<guid>",
     "streamId": "<per-leg stream id>",
     "sender": {"externalId": "<customerId|agentId>", "role": "customer|agent"},
     "autotranscribeResponse": {
         "message": "transcript", "start": 400, "end": 3968,
         "utterance": [{"text": "my card is ################"}],
         "unredactedUtterance": [{"text": "my card is 4111111111111111"}],   # redacted_and_unredacted only
         "tokens": [{"content", "start", "end", "confidence"}]}              # detailedToken only
     "callId": "<callscribe call id>", "namespace": "<media namespace>",
     "sequence": 17, "utteranceNumber": 3}

`utterance[0].text` obeys the stream's redactionOutput (redacted unless it is "unredacted"). The
unredacted copy, in "redacted_and_unredacted" mode only, sits beside it as `unredactedUtterance`
inside `autotranscribeResponse`, in the same one-element-list shape; the GET messages API carries
it as `unredactedText` on each item.

Signing: headers `webhook-id` (stable across retries of one utterance), `webhook-timestamp` and
`webhook-signature` per https://www.standardwebhooks.com. The secret is CALLSCRIBE_WEBHOOK_SECRET;
with none set, callscribe generates one at first start, keeps it in `<data_dir>/webhook-secret`
(mode 0600) and prints that path, so a receiver can always verify.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from callscribe.calls.events import UtteranceEvent
from callscribe.config import Settings

SECRET_FILE = "webhook-secret"


def ordering_key(event: UtteranceEvent) -> str:
    """Webhooks of one leg of one call are delivered in order; other keys never wait for it."""
    return f"{event.call.call_id}:{event.role}"


def message_id(event: UtteranceEvent) -> str:
    """A stable id (the `webhook-id`): the same utterance always gets the same id."""
    return f"msg_{event.call.call_id}_{event.seq}"


def transcript_payload(event: UtteranceEvent) -> dict:
    response: dict = {"message": "transcript", "start": event.start_ms, "end": event.end_ms,
                      "utterance": [{"text": event.text}]}
    if event.redaction_output == "redacted_and_unredacted" and event.unredacted_text is not None:
        response["unredactedUtterance"] = [{"text": event.unredacted_text}]
    if event.words is not None:
        response["tokens"] = [{"content": w.text, "start": w.start_ms, "end": w.end_ms,
                               "confidence": w.confidence} for w in event.words]
    return {
        "type": "transcript",
        "externalConversationId": event.call.guid,
        "streamId": event.stream_id,
        "sender": {"externalId": event.external_id, "role": event.role},
        "autotranscribeResponse": response,
        "callId": event.call.call_id,
        "namespace": event.call.namespace,
        "sequence": event.seq,
        "utteranceNumber": event.utterance,
    }


def encode(payload: dict) -> str:
    """The exact body text that is stored, signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class Signer:
    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
        now = now or datetime.now(timezone.utc)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, now, body),
        }


def load_or_create_secret(settings: Settings) -> str:
    """CALLSCRIBE_WEBHOOK_SECRET, else the secret kept in the data dir (generated at first start)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path = Path(settings.data_dir) / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    print(f"callscribe: generated a webhook signing secret, kept in {path} "
          "(give it to the receiver, or set CALLSCRIBE_WEBHOOK_SECRET)", flush=True)
    return secret
