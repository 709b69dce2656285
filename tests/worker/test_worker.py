"""A real `celery worker` on RabbitMQ and PostgreSQL: one result per job, whatever the deliveries."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import uuid
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from kombu.entity import Queue
from PIL import Image

from tests.helpers import publish_raw, settings_env, wait_for_job, wait_until
from tests.worker.conftest import CELERY, PARAMS, WorkerProcess, image_in, running_worker
from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.queue import JobPublisher, create_celery_app
from visionq.store import Job, JobStatus, JobStore, create_engine_for
from visionq.store.db import alembic_config
from visionq.system import available_cores

MIGRATIONS_HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

TIMING_KEYS = {"queue_wait", "decode", "preprocess", "inference", "postprocess", "total"}


@pytest.fixture(scope="module")
def publisher(rabbit_settings: Settings) -> JobPublisher:
    return JobPublisher(create_celery_app(rabbit_settings))


def submit(store: JobStore, publisher: JobPublisher, data: bytes, **params: object) -> Job:
    job = store.create(image=image_in(data), model=constants.DEFAULT_MODEL, params=PARAMS | params)
    publisher.publish(job.id)
    return job


def drain(store: JobStore, publisher: JobPublisher, samples: dict[str, bytes]) -> None:
    """Run one more job to the end: the single worker took every message published before it."""
    sentinel = submit(store, publisher, samples["zidane.jpg"])
    assert wait_for_job(store, sentinel.id).status is JobStatus.SUCCEEDED


def test_a_published_job_runs_once_and_stores_what_the_detector_finds_in_process(
    rabbit_worker: WorkerProcess,
    rabbit_store: JobStore,
    publisher: JobPublisher,
    samples: dict[str, bytes],
    detector: Detector,
) -> None:
    job = submit(rabbit_store, publisher, samples["bus.jpg"])

    done = wait_for_job(rabbit_store, job.id)

    expected = detector.detect(samples["bus.jpg"])
    assert done.status is JobStatus.SUCCEEDED, done.error_message
    assert done.detections == [d.to_dict() for d in expected.detections]
    assert done.attempts == 1
    assert done.worker is not None and done.worker.startswith("rabbit@")
    assert done.timings_ms is not None and set(done.timings_ms) == TIMING_KEYS
    assert done.timings_ms["total"] >= done.timings_ms["inference"] > 0
    assert done.started_at is not None and done.finished_at is not None


def test_a_job_cancelled_before_it_runs_is_never_run(
    rabbit_worker: WorkerProcess, rabbit_store: JobStore, publisher: JobPublisher, samples: dict[str, bytes]
) -> None:
    job = rabbit_store.create(
        image=image_in(samples["bus.jpg"]), model=constants.DEFAULT_MODEL, params=PARAMS
    )
    assert rabbit_store.cancel(job.id) is not None
    publisher.publish(job.id)

    drain(rabbit_store, publisher, samples)

    after = rabbit_store.get(job.id)
    assert after is not None
    assert (after.status, after.attempts, after.worker, after.detections) == (
        JobStatus.CANCELLED,
        0,
        None,
        None,
    )


def test_a_redelivered_message_of_a_finished_job_writes_nothing(
    rabbit_worker: WorkerProcess, rabbit_store: JobStore, publisher: JobPublisher, samples: dict[str, bytes]
) -> None:
    job = submit(rabbit_store, publisher, samples["bus.jpg"])
    first = wait_for_job(rabbit_store, job.id)
    assert first.status is JobStatus.SUCCEEDED

    publisher.publish(job.id)
    drain(rabbit_store, publisher, samples)

    assert rabbit_store.get(job.id) == first


def test_a_corrupt_image_fails_the_job_with_code_corrupt_and_no_retry(
    rabbit_worker: WorkerProcess, rabbit_store: JobStore, publisher: JobPublisher, samples: dict[str, bytes]
) -> None:
    truncated = samples["bus.jpg"][: len(samples["bus.jpg"]) // 2]
    job = submit(rabbit_store, publisher, truncated)

    done = wait_for_job(rabbit_store, job.id)

    assert (done.status, done.error_code, done.attempts) == (JobStatus.FAILED, "corrupt", 1)
    assert done.error_message and "truncated" in done.error_message
    assert done.detections is None


def slow_png() -> bytes:
    """A 36-megapixel PNG: no DCT shortcut, so decoding alone takes long enough to be caught running."""
    buffer = BytesIO()
    image = Image.linear_gradient("L").resize((6000, 6000)).convert("RGB")
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def detecting(worker: WorkerProcess, job: Job) -> None:
    """Until the worker logs that it runs the job's detection: past every database read of the job, and
    seconds before the result is stored (a 36 MP PNG takes that long to decode)."""
    worker.wait_for_log(f"job {job.id}: detecting")


def test_a_job_whose_worker_is_killed_mid_run_is_redelivered_and_succeeds_on_the_second_attempt(
    rabbit_worker: WorkerProcess, rabbit_store: JobStore, publisher: JobPublisher
) -> None:
    job = submit(rabbit_store, publisher, slow_png())
    detecting(rabbit_worker, job)
    running = rabbit_store.get(job.id)
    assert running is not None and (running.status, running.attempts) == (JobStatus.RUNNING, 1)

    rabbit_worker.kill()
    rabbit_worker.start()
    done = wait_for_job(rabbit_store, job.id)

    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2), done.error_message
    assert done.started_at is not None and running.started_at is not None
    assert done.started_at > running.started_at


def test_a_job_past_the_soft_time_limit_fails_with_code_timeout(
    rabbit_worker: WorkerProcess, rabbit_store: JobStore, publisher: JobPublisher
) -> None:
    job = submit(rabbit_store, publisher, slow_png())
    detecting(rabbit_worker, job)

    rabbit_worker.signal_children(signal.SIGUSR1)  # what billiard sends when the soft limit expires

    done = wait_for_job(rabbit_store, job.id)
    assert (done.status, done.error_code, done.attempts) == (JobStatus.FAILED, "timeout", 1)


def test_a_starting_worker_migrates_its_database_and_its_children_split_the_cores(
    rabbit_settings: Settings, postgres_databases: Callable[[], str], tmp_path: Path
) -> None:
    fresh = rabbit_settings.model_copy(update={"database_url": postgres_databases()})  # never migrated
    threads = max(1, available_cores() // 2)

    with running_worker(fresh, "pair", tmp_path, concurrency=2) as worker:
        # Each child loads the default model before its first job, with its half of the cores.
        wait_until(
            lambda: (
                worker.log().count(
                    f"loaded model 'yolov4-tiny' on openvino fp32, {threads} inference thread(s)"
                )
                == 2
            ),
            timeout_s=60,
            what="both children warm up",
        )
    engine = create_engine_for(fresh.resolved_database_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == MIGRATIONS_HEAD
    finally:
        engine.dispose()


def test_stock_celery_inspect_reaches_the_worker_and_sees_the_detect_task(
    rabbit_worker: WorkerProcess, rabbit_settings: Settings
) -> None:
    # Operators' own tool, pointed at visionq's app module, configured only by the environment.
    result = subprocess.run(
        [*CELERY, "inspect", "registered", "--json", "--timeout", "10"],
        env=settings_env(rabbit_settings),
        cwd=rabbit_settings.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    registered = json.loads(result.stdout)
    (worker,) = (name for name in registered if name.startswith("rabbit@"))
    assert constants.DETECT_TASK in registered[worker], registered


def _dead_letters(settings: Settings) -> list[Any]:
    """The messages in the dead-letter queue, taken off it."""
    app = create_celery_app(settings)
    found = []
    with app.connection_for_write() as conn:
        queue = Queue(constants.DEAD_LETTER_QUEUE, durable=True, channel=conn.default_channel)  # type: ignore[no-untyped-call]
        queue.declare()  # type: ignore[no-untyped-call]
        while (message := queue.get(no_ack=True)) is not None:  # type: ignore[no-untyped-call]
            found.append(message)
    return found


def test_messages_a_worker_cannot_run_are_logged_in_one_line_and_moved_to_the_dead_letter_queue(
    rabbit_worker: WorkerProcess,
    rabbit_settings: Settings,
    rabbit_store: JobStore,
    publisher: JobPublisher,
    samples: dict[str, bytes],
) -> None:
    _dead_letters(rabbit_settings)  # none left from before
    secret = "BODY-MUST-NOT-BE-LOGGED"
    task = {"task": constants.DETECT_TASK, "id": str(uuid.uuid4()), "lang": "py"}
    bad = [
        # pickle: refused (only JSON is accepted), never unpickled
        (pickle.dumps({"args": [secret]}), "application/x-python-serialize", "binary", task),
        # JSON by its content type, not by its bytes
        (b"\xff\xfe" + secret.encode(), "application/json", "utf-8", task),
        # valid JSON, a task no worker has
        (
            json.dumps([[secret], {}, {}]).encode(),
            "application/json",
            "utf-8",
            {**task, "task": "visionq.nope"},
        ),
    ]
    publish_raw(rabbit_settings, bad)
    drain(rabbit_store, publisher, samples)  # the worker went on, and took all three before this job

    dead = wait_until(lambda: _dead_letters(rabbit_settings) or None, timeout_s=30, what="dead letters")
    bodies = [m.body if isinstance(m.body, bytes) else m.body.encode() for m in dead]
    assert sorted(bodies) == sorted(body for body, *_ in bad)  # byte for byte, nothing lost
    reasons = {
        m.body if isinstance(m.body, bytes) else m.body.encode(): m.headers["x-visionq-refused"] for m in dead
    }
    pickled, not_json, unknown = (body for body, *_ in bad)
    assert "ContentDisallowed" in reasons[pickled] and "pickle" in reasons[pickled]
    assert reasons[not_json].startswith("cannot be decoded")
    assert reasons[unknown].startswith("names a task this worker does not have")
    log = rabbit_worker.log_path.read_text(errors="replace")
    refused = [line for line in log.splitlines() if "refused a message" in line]
    assert len(refused) == 3, refused
    assert secret not in log and "Traceback" not in log
