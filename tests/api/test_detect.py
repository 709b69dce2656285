"""POST /v1/detect: the job's result when a worker finishes it in time, else 202 and the queued job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from tests.api.conftest import Stack, complete, upload
from visionq.api.deps import Services
from visionq.store import JobStatus
from visionq.worker.tasks import announce_status


@pytest.fixture
def worker(stack: Stack) -> Iterator[list[BaseException]]:
    """A thread playing the worker: it completes the first queued job ~0.2 s after it appears."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                jobs, _ = stack.store.page(status=JobStatus.QUEUED, limit=1)
                if jobs:
                    time.sleep(0.2)
                    complete(stack, jobs[0].id)
                    # As the worker's task does: on SQLite the broker carries the news, PostgreSQL itself.
                    announce_status(stack.celery, stack.runtime, jobs[0].id, JobStatus.SUCCEEDED)
                    return
                time.sleep(0.01)
            raise AssertionError("no job was queued within 10 s")
        except BaseException as exc:  # handed to the test, which fails with it
            errors.append(exc)

    thread = threading.Thread(target=run, name="api-tests-worker")
    thread.start()
    yield errors
    thread.join(timeout=15)
    assert not thread.is_alive()


def services(stack: Stack) -> Services:
    app = stack.client.app
    assert isinstance(app, FastAPI)
    found = app.state.services
    assert isinstance(found, Services)
    return found


def test_detect_answers_202_with_the_queued_job_when_no_worker_finishes_it_in_time(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    started = time.monotonic()

    response = upload(stack.client, samples["zidane.jpg"], path="/v1/detect", timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 5
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert stack.client.get(response.headers["location"]).json()["status"] == "queued"


def test_detect_answers_200_with_the_finished_job_when_a_worker_completes_it(
    stack: Stack, samples: dict[str, bytes], worker: list[BaseException]
) -> None:
    started = time.monotonic()
    response = upload(stack.client, samples["bus.jpg"], path="/v1/detect", timeout=30, classes="bus")

    assert not worker
    # Woken by the job's change (NOTIFY, or the broker's fanout), not by its 30 s deadline.
    assert time.monotonic() - started < 15
    assert services(stack).waiters.waiting == 0
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    job = response.json()
    assert job["status"] == "succeeded"
    assert [d["label"] for d in job["detections"]] == ["bus"]


def test_detect_takes_its_timeout_from_the_query_too(stack: Stack, samples: dict[str, bytes]) -> None:
    started = time.monotonic()

    response = stack.client.post(
        "/v1/detect", params={"timeout": 0}, files={"image": ("z.jpg", samples["zidane.jpg"], "image/jpeg")}
    )

    assert response.status_code == 202
    assert time.monotonic() - started < 5
