"""Store fixtures: every test runs on SQLite and on a throwaway PostgreSQL database made for this session."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete

from visionq.store.db import create_engine_for, migrate
from visionq.store.jobs import JobStore
from visionq.store.tables import ImageRow, JobRow

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
        engine = create_engine_for(request.getfixturevalue("migrated_postgres_url"))
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
