"""A detection that hangs: the worker kills its child at the hard time limit and the job fails `timeout`
at once, rather than hang one child after another until its deliveries run out."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.stack import Service, running_service, wait_finished
from tests.helpers import slow_png, wait_until
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]

TIME_LIMIT_S = 10


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache, task_time_limit=str(TIME_LIMIT_S)) as running:
        yield running


def test_a_child_that_hangs_past_the_time_limit_fails_its_job_as_a_timeout_on_its_first_delivery(
    service: Service, samples: dict[str, bytes]
) -> None:
    client = service.client
    worker = psutil.Process(service.procs.pid("worker"))
    job_id = client.post("/v1/jobs", files={"image": ("slow.png", slow_png())}).json()["id"]

    wait_until(
        lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running",
        timeout_s=60,
        what="the job running",
        interval_s=0.002,
    )
    (child,) = worker.children()
    os.kill(child.pid, signal.SIGSTOP)  # hung: it cannot even take the soft limit's signal

    job = wait_finished(client, job_id, timeout=TIME_LIMIT_S + 30)
    assert (job["status"], job["attempts"]) == ("failed", 1), job
    error = job["error"]
    assert isinstance(error, dict) and error["code"] == "timeout", job
    assert f"time limit of {TIME_LIMIT_S} s" in error["message"]
    wait_until(  # killed by the worker, right after it failed the job
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
        timeout_s=10,
        what="the hung child gone",
        interval_s=0.1,
    )
    # The worker forked a new child, which takes the next job.
    later = client.post(
        "/v1/detect", files={"image": ("bus.jpg", samples["bus.jpg"])}, data={"timeout": "60"}
    )
    assert later.json()["status"] == "succeeded"
    assert later.json()["attempts"] == 1
