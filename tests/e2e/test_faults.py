"""What clients see while RabbitMQ is down, and that the service recovers when it is back.

These tests stop the real broker (`rabbitmqctl stop_app`) and always start it again, also on failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import rabbitmq_reachable
from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def broker_stopped() -> Iterator[None]:
    """RabbitMQ's application stopped; started again whatever happens."""
    _rabbitmqctl("stop_app")
    try:
        yield
    finally:
        _rabbitmqctl("start_app")
        wait_until(rabbitmq_reachable, timeout_s=60, what="RabbitMQ reachable again", interval_s=0.5)


@pytest.fixture
def broker_outage() -> Iterator[None]:
    """Stops RabbitMQ's application when entered; starts it again whatever happens."""
    with broker_stopped():
        yield


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache) as running:
        yield running


def _ready(client: httpx.Client) -> httpx.Response:
    return client.get("/readyz")


def test_while_the_broker_is_down_submissions_get_503_and_nothing_is_left_queued(
    service: Service, samples: dict[str, bytes], request: pytest.FixtureRequest
) -> None:
    client = service.client
    assert _ready(client).status_code == 200
    request.getfixturevalue("broker_outage")
    not_ready = _ready(client)
    assert not_ready.status_code == 503
    assert not_ready.headers["retry-after"]
    assert "broker" in not_ready.text.lower()
    started = time.monotonic()
    refused = client.post("/v1/jobs", files={"image": ("bus.jpg", samples["bus.jpg"])})
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["code"] == "broker_unavailable"
    assert time.monotonic() - started < 15, "a dead broker must cost a submission seconds, not minutes"
    assert client.get("/v1/jobs").json()["jobs"] == []


def _connected_at(worker_log: str) -> list[datetime]:
    """When the worker's consumer (re)connected to the broker, from its log lines."""
    return [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in worker_log.splitlines()
        if "MainProcess] Connected to amqp://" in line
    ]


def test_the_service_recovers_when_the_broker_comes_back(service: Service, samples: dict[str, bytes]) -> None:
    client = service.client
    # A worker at work loses its broker (a fresh one may still be pulling its model from PyPI).
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=180, what="the worker ready")
    _rabbitmqctl("stop_app")
    try:
        assert _ready(client).status_code == 503
        time.sleep(5)  # long enough for kombu's old backoff to have stretched to 4-6 s
    finally:
        _rabbitmqctl("start_app")
    back = datetime.now()
    # The worker tries again at most 2 s apart: it is consuming within 3 s of the broker's return.
    wait_until(
        lambda: any(t > back for t in _connected_at(service.procs.output("worker"))),
        timeout_s=30,
        what="the worker connected again",
        interval_s=0.1,
    )
    reconnected = min(t for t in _connected_at(service.procs.output("worker")) if t > back)
    assert (reconnected - back).total_seconds() <= 3.0, reconnected - back
    wait_until(
        lambda: _ready(client).status_code == 200,
        timeout_s=90,
        what="API ready again after the broker came back",
        interval_s=0.5,
    )
    done = client.post(
        "/v1/detect", files={"image": ("bus.jpg", samples["bus.jpg"])}, data={"timeout": "60"}, timeout=90
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"


def test_rabbitmq_stopped_and_started_while_clients_submit_loses_nothing(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=180, what="the worker ready")
    submitting = threading.Thread(target=ledger.submit_many, args=(300,), kwargs={"every_s": 0.05})
    submitting.start()
    try:
        time.sleep(4)  # a backlog queued and jobs running when the broker goes
        with broker_stopped():
            time.sleep(15)
            back = datetime.now()  # about when it is back: start_app returns once it is up
    finally:
        submitting.join()

    outcome = ledger.settle(timeout_s=240, logs=service.procs.logs)

    report(capsys, outcome, "RabbitMQ stopped for 15 s while clients submitted, then started")
    assert (outcome.lost, outcome.duplicated) == ([], 0)
    assert outcome.accepted + outcome.refused.total() == 300
    assert outcome.succeeded == outcome.accepted > 0, outcome
    assert set(outcome.refused) == {503}, outcome.refused  # every submit answered, refused only as 503
    assert outcome.slowest_submit_s <= 5.0, outcome.slowest_submit_s
    reconnected = min(t for t in _connected_at(service.procs.output("worker")) if t > back)
    assert (reconnected - back).total_seconds() <= 3.0, reconnected - back


def _memory_alarm_on() -> bool:
    alarms = subprocess.run(
        ["rabbitmq-diagnostics", "-q", "alarms"], capture_output=True, text=True, timeout=60, check=False
    )
    return "memory" in alarms.stdout.lower()


@contextlib.contextmanager
def memory_alarm() -> Iterator[None]:
    """RabbitMQ's memory alarm raised (a watermark far below what it uses): it blocks every publisher.
    The watermark is set back to RabbitMQ's default, whatever happens."""
    _rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
    try:
        wait_until(_memory_alarm_on, timeout_s=60, what="RabbitMQ's memory alarm raised", interval_s=0.5)
        yield
    finally:
        _rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        wait_until(lambda: not _memory_alarm_on(), timeout_s=60, what="the alarm cleared", interval_s=0.5)


def test_a_memory_alarm_blocks_publishers_yet_no_request_hangs_and_nothing_accepted_is_lost(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    ledger.submit_many(5)
    with memory_alarm():
        ledger.submit_many(4)  # blocked: RabbitMQ confirms nothing, so nothing is accepted
    ledger.submit_many(5)

    outcome = ledger.settle(timeout_s=120, logs=service.procs.logs)

    report(capsys, outcome, "RabbitMQ memory alarm raised, then cleared")
    assert (outcome.lost, outcome.duplicated) == ([], 0)
    assert outcome.accepted == outcome.succeeded == 10, outcome
    assert dict(outcome.refused) == {503: 4}
    assert outcome.slowest_submit_s <= 5.0, outcome.slowest_submit_s
