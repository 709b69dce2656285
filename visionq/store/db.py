"""Engines for PostgreSQL and SQLite, and the schema migration every process runs at start-up."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from visionq.errors import DatabaseUnavailable, InvalidRequest

# SQLite waits this long for another process's write lock before giving up with "database is locked":
# longer than any single visionq transaction or migration, short enough to surface a stuck process.
SQLITE_BUSY_TIMEOUT_S = 30

# Execution option naming how a SQLite transaction begins. Writes take the write lock up front
# (IMMEDIATE): a DEFERRED transaction that reads and then writes fails at once with SQLITE_BUSY when
# another writer got in between, and the busy timeout cannot help it. Pure reads opt into DEFERRED.
SQLITE_BEGIN = "visionq_sqlite_begin"

# Execution option asking PostgreSQL for its binary result format (_binary_results). In the default
# text format a bytea arrives hex-encoded: reading a 487 KB photo back cost the server 1.4 ms of CPU and
# psycopg 0.85 ms to decode, against 0.40 and 0.25 ms in binary (measured, AMX Xeon). Only statements
# that read image bytes opt in; the rest keep the format SQLAlchemy's types are tested against.
BINARY_RESULTS = "visionq_binary_results"

# A pooled PostgreSQL connection unused this long is pinged before it is handed out (_ping_when_idle).
PING_AFTER_IDLE_S = 1.0

# Seconds to connect to PostgreSQL before giving up.
PG_CONNECT_TIMEOUT_S = 5

# libpq's TCP options for a connection whose peer went silent (a network partition, a host gone
# without a word): left to the kernel, a statement sent into it waits out ~15 minutes of retransmissions
# (tcp_retries2), and a connection waiting for an answer waits for ever. Here a statement whose bytes
# stay unacknowledged for 10 s fails (TCP_USER_TIMEOUT, in ms), and a quiet connection is probed after
# 10 s, 3 times 5 s apart. Only a dead network trips them: the server's kernel acks a long query's
# bytes and answers the probes while the query or a lock wait runs. A URL's own options win.
PG_TCP_OPTIONS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}

# Key of the PostgreSQL advisory lock serialising migrations across processes ("visionq" in ASCII).
_MIGRATION_LOCK_KEY = 0x7669_7369_6F6E_71

_MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# What the drivers raise when the database cannot be used right now: unreachable or restarting
# (OperationalError, and InterfaceError for a connection that died under us), every pooled connection
# taken (PoolTimeout), SQLite's lock held past the busy timeout (OperationalError). All are transient.
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn the drivers' "cannot use the database now" errors into `DatabaseUnavailable` (cause chained).

    The message names only the error's type: what the driver says (host, port, user) stays in the logs.
    """
    try:
        yield
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(f"The job database cannot be reached ({type(exc).__name__}).") from exc


def create_engine_for(url: str) -> Engine:
    """An engine for a PostgreSQL (psycopg 3) or SQLite URL, set up for many processes sharing the DB."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # A host that drops packets must cost a request seconds and a 503, not a hang (libpq's default
        # is to wait forever), at connect and on a connection it dropped later; a URL's options win.
        defaults = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_TCP_OPTIONS}
        connect_args = {key: value for key, value in defaults.items() if key not in parsed.query}
        engine = create_engine(parsed, connect_args=connect_args)
        _ping_when_idle(engine)
        event.listen(engine, "do_execute", _binary_results)
        return engine
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    raise InvalidRequest(f"unsupported database URL {parsed!r}: use postgresql:// or sqlite://")


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle for `PING_AFTER_IDLE_S`.

    SQLAlchemy's pool_pre_ping pings on every checkout: a round trip per request and per job step.
    A connection in steady use has just proved itself; one that sat idle may have been dropped by a
    restart or a firewall, and a failed ping hands out a fresh connection instead. A restart that
    drops a busy connection fails its one statement: SQLAlchemy then invalidates the whole pool.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except Exception as exc:
            raise DisconnectionError(f"an idle pooled connection is dead: {exc}") from exc
        if not alive:
            raise DisconnectionError("an idle pooled connection is dead")


def _binary_results(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """Run a statement marked `BINARY_RESULTS` with psycopg's binary result format; others as usual.

    SQLAlchemy's do_execute hook: returning True says the execution happened here, so the statement's
    errors, events and results go through SQLAlchemy exactly as for any other.
    """
    if not context.execution_options.get(BINARY_RESULTS):
        return False
    cursor.execute(statement, parameters, binary=True)
    return True


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 would open transactions itself (and break SAVEPOINTs); _on_sqlite_begin does it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """WAL lets readers (the API) run while a writer (a worker) commits; the mode sticks to the file.

    Switching a new file to WAL while another process does the same fails at once with "database is
    locked" (SQLite does not call the busy handler there), so it is retried like the busy timeout would.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {'DEFERRED' if mode == 'DEFERRED' else 'IMMEDIATE'}")


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration built in code, so no alembic.ini is needed at runtime."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def lock_for_migration(connection: Connection) -> None:
    """Hold, until `connection`'s transaction ends, the lock that lets one process migrate at a time.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: the transaction already holds the write lock
    (it began IMMEDIATE), which other processes wait for.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision; safe to call from several processes at once."""
    with translate_errors(), engine.begin() as connection:
        lock_for_migration(connection)
        command.upgrade(alembic_config(connection), "head")


def migrate_database(url: str) -> None:
    """Upgrade the database at `url` over a connection of its own, closed again: nothing survives a fork."""
    engine = create_engine_for(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
