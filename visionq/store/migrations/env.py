"""Alembic environment: runs on the connection `visionq.store.db.migrate` hands over, or on `sqlalchemy.url`.

`migrate()` is the normal path. The `alembic` command line (see alembic.ini at the repository root) is for
developers writing revisions: `alembic -x url=sqlite:///.visionq/visionq.db revision --autogenerate -m ...`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from visionq.store.db import create_engine_for, lock_for_migration
from visionq.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass -x url=... or set sqlalchemy.url")
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine_for(_url())
    try:
        with engine.begin() as own_connection:
            lock_for_migration(own_connection)
            _configure(own_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
