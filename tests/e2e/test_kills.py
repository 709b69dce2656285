"""Workers killed under load (SIGKILL, no warning): every accepted job still ends, and none runs to
completion twice. RabbitMQ hands a dead consumer's messages to the next one; the claim takes the job
over only on such a redelivery."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture(params=["rabbitmq-postgres", pytest.param("redis-postgres", marks=pytest.mark.redis)])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    # On Redis a dead worker's unacked messages come back after the visibility timeout (the time limit
    # + 60 s), or through beat once their claims expired (+ 30 s): a short time limit keeps it quick.
    on_redis = request.param == "redis-postgres"
    extra = {"task_time_limit": "15"} if on_redis else {}
    with running_service(request, tmp_path, model_cache, beat=on_redis, concurrency=2, **extra) as running:
        yield running


def _broker(service: Service) -> str:
    return "Redis" if service.worker_env["VISIONQ_BROKER_URL"].startswith("redis") else "RabbitMQ"


def test_pool_children_killed_again_and_again_under_200_jobs_lose_none(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    worker = psutil.Process(service.procs.pid("worker"))
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=90, what="the worker ready")
    submitting = threading.Thread(target=ledger.submit_many, args=(200,), kwargs={"every_s": 0.02})
    submitting.start()
    kills = 0
    chance = random.Random(8)
    while submitting.is_alive() and kills < 12:
        time.sleep(0.5)
        children = worker.children()
        if children:
            os.kill(chance.choice(children).pid, signal.SIGKILL)  # the worker forks a new one
            kills += 1
    submitting.join()

    outcome = ledger.settle(timeout_s=240, logs=service.procs.logs)

    report(capsys, outcome, f"{_broker(service)}: {kills} pool children SIGKILLed under 200 jobs, 2 children")
    assert kills >= 8
    assert (outcome.lost, outcome.duplicated) == ([], 0), outcome
    assert outcome.accepted == 200 and outcome.succeeded + sum(outcome.failed.values()) == 200
    assert set(outcome.failed) <= {"too_many_attempts"}  # only a job killed on every delivery may fail
    assert outcome.redeliveries <= kills  # a kill interrupts at most the one job its child was running


@pytest.mark.parametrize(
    "service",
    ["rabbitmq-postgres", pytest.param("redis-postgres", marks=[pytest.mark.redis, pytest.mark.long])],
    indirect=True,
)
def test_the_whole_worker_killed_mid_load_then_a_fresh_one_loses_none(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    client = service.client
    ledger.submit_many(60)
    wait_until(
        lambda: any(client.get(f"/v1/jobs/{j}").json()["status"] == "succeeded" for j in ledger.accepted),
        timeout_s=90,
        what="the worker under way",
        interval_s=0.05,
    )
    worker = service.procs.proc("worker")
    os.killpg(worker.pid, signal.SIGKILL)  # main process and children at once
    worker.wait(timeout=30)
    service.start_worker("fresh", concurrency=2)

    outcome = ledger.settle(timeout_s=180, logs=service.procs.logs)

    report(capsys, outcome, f"{_broker(service)}: the whole worker SIGKILLed mid-load, then a fresh one")
    assert (outcome.lost, outcome.duplicated, dict(outcome.failed)) == ([], 0, {}), outcome
    assert outcome.accepted == outcome.succeeded == 60
    assert outcome.redeliveries <= 2  # at most the jobs its 2 children were running


@pytest.fixture(params=["embedded"])
def embedded_service(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache
) -> Iterator[Service]:
    # A short time limit: on the filesystem broker a killed worker's running jobs come back only when
    # their claim expires (time limit + 30 s), as nothing redelivers them.
    with running_service(
        request, tmp_path, model_cache, beat=True, concurrency=2, task_time_limit="15"
    ) as running:
        yield running


def _ready(service: Service, name: str) -> bool:
    return " ready." in service.procs.output(name)


@pytest.mark.long
def test_the_embedded_workers_killed_mid_write_three_times_lose_none(
    embedded_service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    service = embedded_service
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    submitting = threading.Thread(target=ledger.submit_many, args=(90,), kwargs={"every_s": 0.05})
    submitting.start()
    chance = random.Random(10)
    name = "worker"
    for kill in range(3):
        wait_until(partial(_ready, service, name), timeout_s=90, what=f"{name} ready")
        time.sleep(chance.uniform(0.5, 2.0))  # under load: SQLite writes and message files in hand
        worker = service.procs.proc(name)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        name = f"fresh-{kill}"
        service.start_worker(name, concurrency=2)
    submitting.join()

    outcome = ledger.settle(timeout_s=240, logs=service.procs.logs)

    report(capsys, outcome, "The embedded stack's worker SIGKILLed 3 times under 90 jobs, 2 children")
    assert (outcome.lost, outcome.duplicated, dict(outcome.failed)) == ([], 0, {}), outcome
    assert outcome.accepted == outcome.succeeded == 90
