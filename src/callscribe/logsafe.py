"""Keep credentials out of log lines.

Stream URLs carry their access token in the query string (`?token=…`), and the native events
WebSocket accepts `?apiSecret=…`; the server's access log would print both. This filter rewrites
them to `…` in every record of the loggers it is attached to.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_PARAM = re.compile(r"(?i)\b(token|apisecret|api_secret|secret|api_key|apikey|key)=([^&\s\"']+)")


def scrub(text: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=…", text)


def url_for_log(url: str) -> str:
    """A configured URL as it may be logged: no user:password, no query (either may hold a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def install(logger_names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error", "uvicorn")) -> None:
    """Attach the filter once to the server's loggers (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretFilter) for f in logger.filters):
            logger.addFilter(SecretFilter())
