"""Database engine, Alembic migrations run from code, and the threads that keep SQL off the event loop.

SQLite (the default, a file in the data dir) runs in WAL mode so readers never wait for the writer.
PostgreSQL is used when CALLSCRIBE_DATABASE_URL names it; `postgresql://` URLs are taken to mean the
psycopg 3 driver that ships with callscribe.

All writes go through one writer thread, so they happen in the order they were submitted (the
persister relies on this) and SQLite never sees two writers. Reads use a small pool of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import CursorResult, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def normalise_url(url: str) -> str:
    """Pick the installed psycopg 3 driver for bare PostgreSQL URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    # hide_parameters: SQL parameters hold transcripts (unredacted ones in some modes), which must
    # never reach a log line or an error message.
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # connect_timeout: a server that does not answer (network gone) fails a read or write in
    # seconds, so the persister reports the outage and readers get an error instead of hanging.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True,
                         connect_args={"connect_timeout": 10})


def _create_private(path: Path) -> None:
    """Make a missing SQLite file empty and owner-only (0600) before SQLite opens it: the database
    holds transcripts, and SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def affected(result: Any) -> int:
    """The rows an UPDATE or DELETE touched (typed: `Session.execute` says only `Result`)."""
    return cast(CursorResult, result).rowcount


def alembic_config(engine: Engine) -> Config:
    """An Alembic Config built in code, pointing at the migrations shipped inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (blocking; run it in a thread from async code)."""
    command.upgrade(alembic_config(engine), revision)


class Database:
    """The engine, a session factory, and the writer/reader threads."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="callscribe-db-writer")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="callscribe-db-reader")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        upgrade(self.engine)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the writer thread; calls run one at a time in submission order."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, partial(fn, *args))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, partial(fn, *args))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
