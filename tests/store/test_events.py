"""PostgreSQL pushes job status changes as they commit (migration 0002's trigger, PostgresJobEvents)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text, update

from tests.helpers import Heard, wait_until
from visionq.errors import ErrorCode
from visionq.store import ImageIn, JobStore
from visionq.store.events import PostgresJobEvents
from visionq.store.tables import JobRow

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    from visionq.store.db import create_engine_for

    engine = create_engine_for(request.getfixturevalue("migrated_postgres_url"))
    yield engine
    engine.dispose()


@pytest.fixture
def listening(pg_engine: Engine) -> Iterator[tuple[PostgresJobEvents, Heard]]:
    events, heard = PostgresJobEvents(pg_engine.url), Heard()
    events.start(heard.change, heard.gap)
    try:
        assert events.listening.wait(10), "LISTEN never took effect"
        wait_until(lambda: heard.gaps == 1, timeout_s=5, what="the first on_gap")
        yield events, heard
    finally:
        events.stop()


def _job(store: JobStore) -> str:
    image = ImageIn.of(b"\x89PNG bytes", content_type="image/png", width=8, height=8)
    return store.create(image=image, model="yolov4-tiny", params={}).id


def test_every_committed_status_change_is_heard_in_order(
    pg_engine: Engine, listening: tuple[PostgresJobEvents, Heard]
) -> None:
    _, heard = listening
    store = JobStore(pg_engine)
    job_id = _job(store)  # an insert is no status change: nothing is sent for it

    assert store.claim(job_id, worker="w") is not None
    assert store.fail(job_id, code=ErrorCode.CORRUPT, message="x")

    wait_until(lambda: len(heard.of(job_id)) == 2, timeout_s=5, what="both changes")
    assert heard.of(job_id) == ["running", "failed"]


def test_a_rolled_back_change_and_a_write_that_keeps_the_status_are_not_sent(
    pg_engine: Engine, listening: tuple[PostgresJobEvents, Heard]
) -> None:
    _, heard = listening
    store = JobStore(pg_engine)
    job_id, marker = _job(store), _job(store)
    with pg_engine.connect() as conn:
        conn.execute(update(JobRow).where(JobRow.id == job_id).values(status="running"))
        conn.rollback()
    with pg_engine.begin() as conn:
        conn.execute(update(JobRow).where(JobRow.id == job_id).values(worker="same status"))
    store.cancel(marker)  # sent after the others: once it is heard, they would have been too

    wait_until(lambda: heard.of(marker) == ["cancelled"], timeout_s=5, what="the marker's change")
    assert heard.of(job_id) == []


def test_a_dropped_listener_connection_comes_back_and_says_changes_may_have_been_missed(
    pg_engine: Engine, listening: tuple[PostgresJobEvents, Heard]
) -> None:
    events, heard = listening
    with pg_engine.begin() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        ).all()
    assert killed == [(True,)]

    wait_until(lambda: heard.gaps == 2, timeout_s=15, what="the reconnect's on_gap")
    assert events.listening.wait(5)
    store = JobStore(pg_engine)
    job_id = _job(store)
    store.cancel(job_id)
    wait_until(lambda: heard.of(job_id) == ["cancelled"], timeout_s=5, what="a change after the reconnect")
