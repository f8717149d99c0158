"""API credentials: from CALLSCRIBE_API_KEYS, or one pair generated at first start and kept."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

from callscribe.config import ApiKey, Settings
from callscribe.secretfiles import load_or_create

log = logging.getLogger(__name__)
_FILE = "api-key.json"


def load_or_create_api_keys(settings: Settings) -> list[ApiKey]:
    """The configured keys; with none configured, the pair kept in the data dir (made if missing).

    A generated pair is printed once, when it is made, so the operator can copy it.
    """
    keys = settings.parsed_api_keys
    if keys:
        return keys
    if settings.redis_url:  # cluster mode: every node accepts the one generated pair
        return [_shared_api_key(settings.redis_url)]
    path = Path(settings.data_dir) / _FILE
    made: list[ApiKey] = []

    def generate() -> str:
        made.append(ApiKey("cs-" + secrets.token_hex(8), secrets.token_urlsafe(32), "default"))
        return json.dumps({"id": made[0].id, "secret": made[0].secret, "tenant": made[0].tenant})

    data = json.loads(load_or_create(path, generate))
    key = ApiKey(data["id"], data["secret"], data.get("tenant", "default"))
    if made and made[0] == key:
        print(f"callscribe: generated API credentials (kept in {path}):\n  id:     {key.id}\n  secret: {key.secret}",
              flush=True)
    return [key]


def _shared_api_key(redis_url: str) -> ApiKey:
    from callscribe.cluster.secrets import shared_secret

    candidate = ApiKey("cs-" + secrets.token_hex(8), secrets.token_urlsafe(32), "default")
    text, made = shared_secret(redis_url, "api-key", lambda: json.dumps(
        {"id": candidate.id, "secret": candidate.secret, "tenant": candidate.tenant}))
    data = json.loads(text)
    key = ApiKey(data["id"], data["secret"], data.get("tenant", "default"))
    if made:
        print(f"callscribe: generated API credentials (kept in Redis):\n  id:     {key.id}\n  secret: {key.secret}",
              flush=True)
    return key
