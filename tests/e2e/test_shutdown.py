"""A worker sent SIGTERM mid-load, to its main process or to its whole process group (systemd's default,
`kill -- -PGID`): it finishes the jobs it is running, takes no more, and exits; a fresh worker runs the
rest. No job is interrupted, so none is delivered twice."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import slow_png, wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]

JOBS = 24


@pytest.fixture(
    params=["rabbitmq-postgres", pytest.param("redis-postgres", marks=pytest.mark.redis), "embedded"]
)
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    # The embedded broker hands a worker its messages as files it deletes: those it had taken but not
    # started when it drained come back through beat's reconciliation.
    beat = request.param == "embedded"
    with running_service(request, tmp_path, model_cache, beat=beat, concurrency=2) as running:
        yield running


@pytest.mark.parametrize("target", ["main process", "process group"])
def test_a_worker_sent_sigterm_mid_load_finishes_its_jobs_and_a_fresh_one_runs_the_rest(
    service: Service, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = service.client
    ledger = Ledger(client, Uploads([("slow.png", slow_png())], unique=True))
    ledger.submit_many(JOBS)
    wait_until(
        lambda: any(client.get(f"/v1/jobs/{j}").json()["status"] == "running" for j in ledger.accepted),
        timeout_s=60,
        what="a job running",
        interval_s=0.01,
    )

    worker = service.procs.proc("worker")
    (os.kill if target == "main process" else os.killpg)(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, service.procs.output("worker")[-3000:]
    # Drained: every job it had taken finished; the others wait for the next worker.
    statuses = {client.get(f"/v1/jobs/{j}").json()["status"] for j in ledger.accepted}
    assert statuses <= {"succeeded", "queued"}, statuses

    service.start_worker("fresh", concurrency=2)
    outcome = ledger.settle(timeout_s=180, logs=service.procs.logs)

    broker = str(service.worker_env.get("VISIONQ_BROKER_URL", "embedded")).partition(":")[0]
    report(capsys, outcome, f"{broker}: SIGTERM to the worker ({target}) mid-load, then a fresh one")
    assert (outcome.lost, outcome.duplicated, outcome.redeliveries) == ([], 0, 0), outcome
    assert outcome.accepted == outcome.succeeded == JOBS
