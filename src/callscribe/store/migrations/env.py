"""Alembic environment for callscribe's schema.

callscribe runs this from code at startup (callscribe.store.db.upgrade), handing over its engine in
`config.attributes["engine"]`. Developers can also run Alembic by hand with
`alembic -c src/callscribe/store/alembic.ini ...` and CALLSCRIBE_DATABASE_URL set.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from callscribe.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    from callscribe.store.db import normalise_url

    return normalise_url(config.get_main_option("sqlalchemy.url") or os.environ.get("CALLSCRIBE_DATABASE_URL", ""))


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = config.attributes.get("engine") or create_engine(_url())
    with engine.connect() as connection:
        # Batch mode lets later migrations ALTER tables on SQLite (which rebuilds the table).
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
