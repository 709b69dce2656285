"""The embedded stack: a real worker on kombu's filesystem broker and SQLite; the broker folder's upkeep."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.worker.conftest import PARAMS, WorkerProcess, image_in, wait_for_job
from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.store import JobStatus, JobStore, create_engine_for
from visionq.store.models import JobRow
from visionq.worker import JobPublisher, create_celery_app, embedded

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
    engine = create_engine_for(embedded_settings.resolved_database_url)
    with engine.begin() as conn:
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        conn.execute(update(JobRow).where(JobRow.id == job.id).values(started_at=an_hour_ago))
    engine.dispose()
    app = create_celery_app(embedded_settings)
    app.loader.import_default_modules()  # registers the tasks, as a worker or beat does at start

    republished = app.tasks[constants.RECOVER_TASK].apply(throw=True).get()

    assert republished >= 1
    done = wait_for_job(embedded_store, job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error_message


def test_celery_inspect_ping_reaches_a_worker_over_the_filesystem_broker(
    embedded_worker: WorkerProcess, embedded_settings: Settings
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    env["VISIONQ_DATA_DIR"] = str(embedded_settings.data_dir)
    celery = Path(sys.executable).with_name("celery")
    node = f"embedded@{socket.gethostname()}"  # named, so inspect returns on its reply, not at the timeout
    argv = [str(celery), "-A", "visionq.worker.celery_app", "inspect", "ping", "-d", node, "--timeout", "10"]

    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert f"{node}: OK" in result.stdout and "pong" in result.stdout


def test_old_event_and_control_messages_are_pruned_but_job_messages_never(tmp_path: Path) -> None:
    folder = embedded.messages_folder(tmp_path)
    folder.mkdir(parents=True)
    old = time.time() - embedded.STALE_MESSAGE_AGE_S - 60
    files = {
        "old_event": folder / "1_a.celeryev.4947eb23.msg",
        "old_control": folder / "2_b.gone@host.celery.pidbox.msg",
        "old_job": folder / f"3_c.{constants.QUEUE}.msg",
        "fresh_event": folder / "4_d.celeryev.4947eb23.msg",
    }
    for name, path in files.items():
        path.write_text("{}")
        if name.startswith("old"):
            os.utime(path, (old, old))

    assert embedded.prune_stale_messages(tmp_path) == 2

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        files[name].name for name in ("old_job", "fresh_event")
    )
