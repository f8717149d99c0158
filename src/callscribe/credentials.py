"""API credentials: from CALLSCRIBE_API_KEYS, or one pair generated at first start and kept."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from callscribe.config import ApiKey, Settings

log = logging.getLogger(__name__)
_FILE = "api-key.json"


def load_or_create_api_keys(settings: Settings) -> list[ApiKey]:
    """The configured keys; with none configured, the pair kept in the data dir (made if missing).

    A generated pair is printed once, when it is made, so the operator can copy it.
    """
    keys = settings.parsed_api_keys
    if keys:
        return keys
    path = Path(settings.data_dir) / _FILE
    if path.exists():
        data = json.loads(path.read_text())
        return [ApiKey(data["id"], data["secret"], data.get("tenant", "default"))]
    key = ApiKey("cs-" + secrets.token_hex(8), secrets.token_urlsafe(32), "default")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"id": key.id, "secret": key.secret, "tenant": key.tenant}, fh)
    print(f"callscribe: generated API credentials (kept in {path}):\n  id:     {key.id}\n  secret: {key.secret}", flush=True)
    return [key]
