"""The Alembic migrations and engine set-up, on an empty SQLite file and an empty PostgreSQL database."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from visionq.store.db import alembic_config, create_engine_for, migrate
from visionq.store.tables import Base

# Each process sleeps until the same instant, so both are past their imports and migrate together.
_MIGRATE_AT = """
import sys, time
from visionq.store.db import create_engine_for, migrate
engine = create_engine_for(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
migrate(engine)
engine.dispose()
"""

SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = SCRIPTS.get_current_head()  # raises if the history has branched into several heads


@pytest.fixture
def fresh_engine(empty_database_url: str) -> Engine:
    return create_engine_for(empty_database_url)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_the_migrations_form_one_line_from_the_first_revision_to_the_head() -> None:
    revisions = list(SCRIPTS.walk_revisions())  # head first

    assert HEAD is not None and revisions[0].revision == HEAD
    assert revisions[-1].down_revision is None
    for newer, older in zip(revisions, revisions[1:], strict=False):
        assert newer.down_revision == older.revision


def test_migrating_an_empty_database_twice_reaches_head_and_changes_nothing(fresh_engine: Engine) -> None:
    try:
        assert current_revision(fresh_engine) is None
        migrate(fresh_engine)
        tables = set(inspect(fresh_engine).get_table_names())
        migrate(fresh_engine)

        assert current_revision(fresh_engine) == HEAD
        assert {"images", "jobs", "alembic_version"} <= tables
        assert set(inspect(fresh_engine).get_table_names()) == tables
    finally:
        fresh_engine.dispose()


def test_the_migrated_schema_matches_the_models(fresh_engine: Engine) -> None:
    try:
        migrate(fresh_engine)
        with fresh_engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
    finally:
        fresh_engine.dispose()


def test_downgrading_to_nothing_and_upgrading_again_works(fresh_engine: Engine) -> None:
    try:
        migrate(fresh_engine)
        with fresh_engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert not {"images", "jobs"} & set(inspect(fresh_engine).get_table_names())
        migrate(fresh_engine)
        assert current_revision(fresh_engine) == HEAD
    finally:
        fresh_engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(empty_database_url: str) -> None:
    start_at = str(time.time() + 3)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_AT, empty_database_url, start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [(proc.communicate(timeout=120), proc.returncode) for proc in procs]

    for (_, stderr), returncode in results:
        assert returncode == 0, stderr.decode()
    engine = create_engine_for(empty_database_url)
    try:
        assert current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_the_status_column_rejects_a_value_outside_the_lifecycle(engine: Engine) -> None:
    insert_image = (
        "INSERT INTO images (sha256, content_type, width, height, size_bytes, data, created_at)"
        " VALUES ('aa', 'image/png', 1, 1, 1, :data, CURRENT_TIMESTAMP)"
    )
    insert_job = (
        "INSERT INTO jobs (id, status, model, params, image_sha256, created_at)"
        " VALUES ('00000000-0000-4000-8000-000000000000', 'paused', 'm', '{}', 'aa', CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(insert_image), {"data": b"x"})
        conn.execute(text(insert_job))


def test_a_job_cannot_point_at_a_missing_image(engine: Engine) -> None:
    insert_job = (
        "INSERT INTO jobs (id, status, model, params, image_sha256, created_at)"
        " VALUES ('00000000-0000-4000-8000-000000000000', 'queued', 'm', '{}', 'bb', CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text(insert_job))


def test_a_sqlite_engine_creates_its_directory_and_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "visionq.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one()
            busy_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
        assert path.exists()
        assert (journal, foreign_keys, busy_ms) == ("wal", 1, 30_000)
    finally:
        engine.dispose()
