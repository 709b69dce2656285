"""Webhooks from real workers: signed, retried with backoff from the broker, recorded on the job after
the last try, and still delivered after the worker that was retrying is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Service, running_service, wait_finished
from tests.helpers import wait_until
from tests.webhooks.receiver import Receiver, receiving
from visionq import constants
from visionq.models.cache import ModelCache
from visionq.webhooks import verify
from visionq.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

pytestmark = pytest.mark.slow

SECRET = "s3cret-for-the-e2e-tests"
_DISTRIBUTED = pytest.param("rabbitmq-postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])


def webhook_service(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model_cache: ModelCache,
    *,
    retry_s: str,
    max_attempts: str = str(constants.WEBHOOK_MAX_ATTEMPTS),
) -> AbstractContextManager[Service]:
    """A service signing webhooks with SECRET; the receivers listen on the loopback, so it may call
    back there."""
    return running_service(
        request,
        tmp_path,
        model_cache,
        webhook_secret=SECRET,
        webhook_allow_private="true",
        webhook_retry_s=retry_s,
        webhook_max_attempts=max_attempts,
    )


@pytest.fixture(params=["embedded", _DISTRIBUTED])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with webhook_service(request, tmp_path, model_cache, retry_s="0.5", max_attempts="4") as svc:
        yield svc


def submit(service: Service, image: bytes, callback_url: str) -> str:
    response = service.client.post(
        "/v1/jobs", files={"image": ("image.jpg", image)}, data={"callback_url": callback_url}
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def webhook_settled(service: Service, job_id: str, *, timeout_s: float = 60) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        webhook: dict[str, Any] = service.client.get(f"/v1/jobs/{job_id}").json()["webhook"]
        return webhook if webhook["status"] != "pending" else None

    return wait_until(
        settled, timeout_s=timeout_s, what=f"the webhook of job {job_id} settled", interval_s=0.2
    )


def test_a_finished_job_is_posted_once_signed_with_its_json(
    service: Service, samples: dict[str, bytes]
) -> None:
    receiver = Receiver()
    with receiving(receiver) as base:
        job_id = submit(service, samples["bus.jpg"], f"{base}/hooks?from=visionq")
        webhook = webhook_settled(service, job_id)
    assert (webhook["status"], webhook["attempts"], webhook["last_error"]) == ("delivered", 1, None)
    [got] = receiver.received
    assert got.path == "/hooks?from=visionq"
    assert verify(
        SECRET,
        timestamp=got.headers[TIMESTAMP_HEADER],
        signature=got.headers[SIGNATURE_HEADER],
        body=got.body,
    )
    job = wait_finished(service.client, job_id)
    sent = json.loads(got.body)
    assert sent["id"] == job_id and sent["status"] == "succeeded"
    assert sent["detections"] == job["detections"]
    assert got.headers["Visionq-Delivery"] == job_id


def test_a_receiver_answering_500_is_retried_with_backoff_until_it_takes_it(
    service: Service, samples: dict[str, bytes]
) -> None:
    receiver = Receiver(statuses=[500, 500, 200])
    with receiving(receiver) as base:
        job_id = submit(service, samples["zidane.jpg"], f"{base}/hook")
        webhook = webhook_settled(service, job_id)
    assert (webhook["status"], webhook["attempts"], webhook["last_error"]) == ("delivered", 3, None)
    assert receiver.count() == 3


def test_a_receiver_down_at_first_gets_the_webhook_once_it_is_up(
    service: Service, samples: dict[str, bytes]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job_id = submit(service, samples["bus.jpg"], f"http://127.0.0.1:{port}/hook")
    # Nobody listens: the first try fails, and is recorded.
    wait_until(
        lambda: service.client.get(f"/v1/jobs/{job_id}").json()["webhook"]["attempts"] >= 1,
        timeout_s=60,
        what="a first failed try",
    )
    receiver = Receiver()
    with receiving(receiver, port=port):
        webhook = webhook_settled(service, job_id)
    assert webhook["status"] == "delivered" and webhook["attempts"] >= 2
    assert receiver.count() == 1


def test_after_the_last_try_the_failure_is_recorded_on_the_job(
    service: Service, samples: dict[str, bytes]
) -> None:
    receiver = Receiver(statuses=[500])
    with receiving(receiver) as base:
        job_id = submit(service, samples["bus.jpg"], f"{base}/hook")
        webhook = webhook_settled(service, job_id)
        time.sleep(1.5)  # longer than the next retry would wait: none comes
    assert (webhook["status"], webhook["attempts"], webhook["last_error"]) == ("failed", 4, "HTTP 500")
    assert receiver.count() == 4


@pytest.fixture(params=[_DISTRIBUTED])
def slowly_retrying(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache
) -> Iterator[Service]:
    """RabbitMQ + PostgreSQL, a webhook's first retry 5 s after its first try."""
    with webhook_service(request, tmp_path, model_cache, retry_s="5") as svc:
        yield svc


def test_a_retry_survives_the_worker_being_killed(
    slowly_retrying: Service, samples: dict[str, bytes]
) -> None:
    """The retry waits on the broker (RabbitMQ holds it unacked for the worker that waits out its
    countdown): killed, that worker's retry goes to the next one."""
    service = slowly_retrying
    receiver = Receiver(statuses=[500])
    with receiving(receiver) as base:
        job_id = submit(service, samples["bus.jpg"], f"{base}/hook")
        # The first try answered, and recorded: the retry now waits out its countdown in the worker.
        wait_until(
            lambda: service.client.get(f"/v1/jobs/{job_id}").json()["webhook"]["attempts"] == 1,
            timeout_s=60,
            what="a first failed try recorded",
        )
        os.killpg(service.procs.pid("worker"), signal.SIGKILL)
        service.procs.proc("worker").wait(30)
        assert receiver.count() == 1  # killed while its retry waited
        receiver.statuses = [200]
        service.start_worker("second")
        webhook = webhook_settled(service, job_id, timeout_s=90)
    assert (webhook["status"], webhook["attempts"]) == ("delivered", 2)
    assert receiver.count() == 2
