"""The embedded stack: a real worker on kombu's filesystem broker and SQLite."""

from __future__ import annotations

import socket
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.helpers import settings_env, wait_for_job
from tests.worker.conftest import CELERY, PARAMS, WorkerProcess, image_in
from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.queue import JobPublisher, create_celery_app
from visionq.store import JobStatus, JobStore
from visionq.store.tables import JobRow
from visionq.worker.app import WorkerApp

pytestmark = pytest.mark.slow


def test_a_job_runs_over_the_filesystem_broker_and_sqlite(
    embedded_worker: WorkerProcess,
    embedded_settings: Settings,
    embedded_store: JobStore,
    samples: dict[str, bytes],
    detector: Detector,
) -> None:
    publisher = JobPublisher(create_celery_app(embedded_settings))
    publisher.ping()
    job = embedded_store.create(
        image=image_in(samples["bus.jpg"]), model=constants.DEFAULT_MODEL, params=PARAMS
    )
    publisher.publish(job.id)

    done = wait_for_job(embedded_store, job.id)

    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.detections == [d.to_dict() for d in detector.detect(samples["bus.jpg"]).detections]
    assert done.attempts == 1
    assert done.timings_ms is not None and done.timings_ms["queue_wait"] >= 0
    assert not list((embedded_settings.broker_dir / "messages").glob(f"*.{constants.QUEUE}.msg"))


def test_a_job_whose_worker_died_and_whose_message_was_lost_is_recovered_and_run(
    embedded_worker: WorkerProcess,
    embedded_settings: Settings,
    embedded_store: JobStore,
    samples: dict[str, bytes],
) -> None:
    # What a kill -9 leaves on the filesystem broker: the job claimed (running) an hour ago, and its
    # message gone with the dead worker's memory.
    job = embedded_store.create(
        image=image_in(samples["zidane.jpg"]), model=constants.DEFAULT_MODEL, params=PARAMS
    )
    assert embedded_store.claim(job.id, worker="died") is not None
    with embedded_store.engine.begin() as conn:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        conn.execute(update(JobRow).where(JobRow.id == job.id).values(started_at=an_hour_ago))
    app = WorkerApp(embedded_settings)
    app.loader.import_default_modules()  # registers the tasks, as a worker does at start

    try:
        republished = app.tasks[constants.RECOVER_TASK].apply(throw=True).get()
    finally:
        app.runtime.close()

    assert republished >= 1
    done = wait_for_job(embedded_store, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error_message


def test_celery_inspect_ping_reaches_a_worker_over_the_filesystem_broker(
    embedded_worker: WorkerProcess, embedded_settings: Settings
) -> None:
    node = f"embedded@{socket.gethostname()}"  # named, so inspect returns on its reply, not at the timeout
    argv = [*CELERY, "inspect", "ping", "-d", node, "--timeout", "10"]

    result = subprocess.run(
        argv,
        env=settings_env(embedded_settings),
        cwd=embedded_settings.data_dir,  # no developer's .env
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"{node}: OK" in result.stdout and "pong" in result.stdout
