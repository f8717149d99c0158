"""Webhooks in general: what one message is, its Standard Webhooks signature, and the signing secret.

Each control surface formats its own bodies (ASAPP's transcript webhook is in api/asapp_wire.py); a
`Formatter` turns a call event into at most one `WebhookMessage` (or a list, when one event
completes several, as a final can several 5 s segments of a memories.ai task), which the persister
stores in the outbox in the same transaction as the event.

Signing: headers `webhook-id` (stable across retries of one message), `webhook-timestamp` and
`webhook-signature` per https://www.standardwebhooks.com. The secret is CALLSCRIBE_WEBHOOK_SECRET;
with none set, callscribe generates one at first start, keeps it in `<data_dir>/webhook-secret`
(mode 0600) and prints that path, so a receiver can always verify.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from standardwebhooks.webhooks import Webhook

from callscribe.calls.events import AnyEvent, UtteranceEvent
from callscribe.config import Settings
from callscribe.secretfiles import load_or_create

SECRET_FILE = "webhook-secret"


@dataclass(frozen=True)
class WebhookMessage:
    """A webhook to enqueue in the same transaction as the event that caused it."""

    msg_id: str  # the `webhook-id`: the same on every retry
    ordering_key: str  # messages of one key are delivered in order; other keys never wait for it
    payload: str  # the exact JSON body


Formatter = Callable[[AnyEvent], "WebhookMessage | Sequence[WebhookMessage] | None"]


def ordering_key(event: UtteranceEvent) -> str:
    """Webhooks of one participant of one call are delivered in order."""
    return f"{event.call.call_id}:{event.participant}"


def message_id(event: UtteranceEvent) -> str:
    """A stable id (the `webhook-id`): the same utterance always gets the same id."""
    return f"msg_{event.call.call_id}_{event.seq}"


def encode(payload: dict[str, Any]) -> str:
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
    if settings.redis_url:  # cluster mode: one secret for every node, whichever sends a row
        from callscribe.cluster.secrets import shared_secret

        value, made = shared_secret(settings.redis_url, "webhook",
                                    lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        if made:
            print("callscribe: generated a webhook signing secret, kept in Redis (give it to the receiver, "
                  "or set CALLSCRIBE_WEBHOOK_SECRET)", flush=True)
        return value
    return load_or_create(
        Path(settings.data_dir) / SECRET_FILE,
        lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        announce="a webhook signing secret (give it to the receiver, or set CALLSCRIBE_WEBHOOK_SECRET)")
