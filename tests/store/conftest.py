"""Store fixtures: every test runs on SQLite and on a throwaway PostgreSQL database made for this session."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from visionq.store.db import create_engine_for, migrate
from visionq.store.jobs import JobStore
from visionq.store.models import ImageRow, JobRow

# The maintenance database: test databases are created and dropped through it, never used themselves.
POSTGRES_ADMIN_URL = os.environ.get(
    "VISIONQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class FakeClock:
    """A clock that ticks `step` on every reading (so creation order is unambiguous) and can jump ahead."""

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += self.step
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Returns create(): the URL of a new, empty PostgreSQL database; all are dropped after the session."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL is unreachable at {make_url(POSTGRES_ADMIN_URL)!r}: {exc.orig}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    created: list[str] = []

    def create() -> str:
        name = f"visionq_test_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_store_url(postgres_databases: Callable[[], str]) -> str:
    """One migrated PostgreSQL database shared by the session's store tests (emptied after each)."""
    url = postgres_databases()
    engine = create_engine_for(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables yet (its SQLite file's directory does not exist yet either)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'visionq.db'}"
    create: Callable[[], str] = request.getfixturevalue("postgres_databases")
    return create()


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database."""
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'visionq.db'}")
        migrate(engine)
    else:
        engine = create_engine_for(request.getfixturevalue("postgres_store_url"))
    yield engine
    if request.param == "postgres":
        with engine.begin() as conn:
            conn.execute(delete(JobRow))
            conn.execute(delete(ImageRow))
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 1, 1, tzinfo=UTC))


@pytest.fixture
def store(engine: Engine, clock: FakeClock) -> JobStore:
    return JobStore(engine, clock=clock)
