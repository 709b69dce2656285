"""The reconciliation of the job table with each real broker: what the broker lost is published again,
and a healthy queue, however deep, gets no second message."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.worker.conftest import PARAMS, image_in
from visionq import constants
from visionq.config import Settings
from visionq.queue import JobPublisher
from visionq.queue.app import jobs_queue
from visionq.store import Job, JobStatus
from visionq.store.tables import JobRow
from visionq.worker.app import WorkerApp
from visionq.worker.runtime import Runtime
from visionq.worker.tasks import claim_lease, reconcile

_RABBITMQ = pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])
_REDIS = pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres])


@pytest.fixture(params=[_RABBITMQ, _REDIS, "embedded"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WorkerApp]:
    """A worker's app on a broker of its own (a new vhost; Redis' queue emptied) and an empty database;
    no worker consumes, so what the queue holds stays there."""
    if request.param == "embedded":
        settings = Settings(data_dir=tmp_path, broker_url=None, database_url=None)
    else:
        create_db: Callable[[], str] = request.getfixturevalue("postgres_databases")
        if request.param == "rabbitmq":
            create_vhost: Callable[[], str] = request.getfixturevalue("rabbitmq_vhosts")
            broker = create_vhost()
        else:
            broker = request.getfixturevalue("redis_url")
        settings = Settings(data_dir=tmp_path, broker_url=broker, database_url=create_db())
    app = WorkerApp(settings)
    app.prepare(inference_processes=1)  # migrates, as a worker does before it consumes
    _lose_every_message(app)
    try:
        yield app
    finally:
        _lose_every_message(app)
        app.runtime.close()


def _lose_every_message(app: WorkerApp) -> None:
    """What a Redis restart without persistence does to the queue (and a killed worker, to its share of
    the filesystem broker's): its messages are gone."""
    queue = jobs_queue(app)
    with app.connection_for_write() as conn:
        queue.bind(conn.default_channel).declare()
        queue.bind(conn.default_channel).purge()


def _submitted(
    runtime: Runtime, publisher: JobPublisher, samples: dict[str, bytes], count: int, *, extra_s: int = 60
) -> list[Job]:
    """`count` jobs stored and published as the API does, then aged `extra_s` past REQUEUE_AFTER_S."""
    jobs = [
        runtime.store.create(
            image=image_in(samples["zidane.jpg"]), model=constants.DEFAULT_MODEL, params=PARAMS
        )
        for _ in range(count)
    ]
    for job in jobs:
        publisher.publish(job.id)
    _age(runtime, [j.id for j in jobs], created=timedelta(seconds=constants.REQUEUE_AFTER_S + extra_s))
    return jobs


def _age(
    runtime: Runtime, job_ids: list[str], *, created: timedelta, started: timedelta | None = None
) -> None:
    values: dict[str, datetime] = {"created_at": datetime.now(UTC) - created}
    if started is not None:
        values["started_at"] = datetime.now(UTC) - started
    with runtime.store.engine.begin() as conn:
        conn.execute(update(JobRow).where(JobRow.id.in_(job_ids)).values(**values))


def test_a_deep_healthy_queue_gets_no_second_message(app: WorkerApp, samples: dict[str, bytes]) -> None:
    runtime, publisher = app.runtime, JobPublisher(app)
    _submitted(runtime, publisher, samples, 30)

    assert publisher.waiting() == 30
    assert reconcile(runtime, publisher) == 0
    assert publisher.waiting() == 30


def test_queued_jobs_whose_messages_the_broker_lost_are_published_again_once(
    app: WorkerApp, samples: dict[str, bytes]
) -> None:
    runtime, publisher = app.runtime, JobPublisher(app)
    lost = _submitted(runtime, publisher, samples, 5, extra_s=120)
    _lose_every_message(app)
    kept = _submitted(runtime, publisher, samples, 3)  # submitted after the loss: their messages wait

    assert publisher.waiting() == 3
    assert reconcile(runtime, publisher) == 5
    assert publisher.waiting() == 8
    assert reconcile(runtime, publisher) == 0  # nothing short any more
    # The lost ones came back (a re-publish sets started_at), the others were left alone.
    for job, republished in [(j, True) for j in lost] + [(j, False) for j in kept]:
        found = runtime.store.get(job.id)
        assert found is not None and (found.status, found.attempts) == (JobStatus.QUEUED, 0)
        assert (found.started_at is not None) is republished


def test_a_job_whose_claim_outlived_the_time_limit_is_published_again(
    app: WorkerApp, samples: dict[str, bytes]
) -> None:
    runtime, publisher = app.runtime, JobPublisher(app)
    (job,) = _submitted(runtime, publisher, samples, 1)
    assert runtime.store.claim(job.id, worker="died") is not None
    _lose_every_message(app)  # the dead worker's message, gone with it
    lease = claim_lease(app.settings)
    _age(runtime, [job.id], created=lease * 2, started=lease - timedelta(seconds=5))
    assert reconcile(runtime, publisher) == 0  # its claim still holds: its worker may be on it

    _age(runtime, [job.id], created=lease * 2, started=lease + timedelta(seconds=5))
    assert reconcile(runtime, publisher) == 1
    assert publisher.waiting() == 1
    requeued = runtime.store.get(job.id)
    assert requeued is not None and requeued.status is JobStatus.QUEUED


def test_more_lost_jobs_than_a_batch_come_back_in_one_reconciliation(
    app: WorkerApp, samples: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, publisher = app.runtime, JobPublisher(app)
    monkeypatch.setattr(constants, "RECONCILE_BATCH", 4)
    _submitted(runtime, publisher, samples, 11)
    _lose_every_message(app)

    assert reconcile(runtime, publisher) == 11  # batches of 4, 4 and 3
    assert publisher.waiting() == 11
    assert reconcile(runtime, publisher) == 0


def test_a_reconciliation_stops_at_its_time_budget_and_the_next_goes_on(
    app: WorkerApp, samples: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, publisher = app.runtime, JobPublisher(app)
    monkeypatch.setattr(constants, "RECONCILE_BATCH", 4)
    monkeypatch.setattr(constants, "RECONCILE_BUDGET_S", 0)  # out of time after the first batch
    _submitted(runtime, publisher, samples, 6)
    _lose_every_message(app)

    assert reconcile(runtime, publisher) == 4
    assert reconcile(runtime, publisher) == 2
    assert publisher.waiting() == 6
