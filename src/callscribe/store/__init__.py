"""SQL storage: SQLAlchemy models, repositories and Alembic migrations (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from callscribe.store.db import Database
from callscribe.store.outbox import OutboxJob, OutboxRepository
from callscribe.store.repository import CallRepository, NewOutbox

__all__ = ["Store", "Database", "CallRepository", "OutboxRepository", "OutboxJob", "NewOutbox"]


class Store:
    """The database and its repositories, as the app shares them (`services.store`)."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.calls = CallRepository(self.db)
        self.outbox = OutboxRepository(self.db)

    async def start(self) -> None:
        """Apply pending migrations (in a thread: Alembic is blocking)."""
        await self.db.write(self.db.migrate)

    def close(self) -> None:
        self.db.close()
