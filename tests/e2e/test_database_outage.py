"""PostgreSQL stopped under load for a minute (VISIONQ_TEST_PG_OUTAGE_S: 360 for the six-minute run),
then started again: submits meanwhile get 503 at once, and every accepted job still runs, once.

This test stops the machine's PostgreSQL (`pg_ctlcluster ... stop`) and always starts it again.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

OUTAGE_S = float(os.environ.get("VISIONQ_TEST_PG_OUTAGE_S", "60"))

pytestmark = [
    pytest.mark.faults,
    pytest.mark.long,
    pytest.mark.slow,
    pytest.mark.rabbitmq,
    pytest.mark.postgres,
    pytest.mark.timeout(OUTAGE_S + 420),
]


def _cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def _postgres_up() -> bool:
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def postgres_down() -> Iterator[None]:
    """The machine's PostgreSQL stopped (fast: open sessions are cut); started again whatever happens."""
    subprocess.run([*_cluster(), "stop", "-m", "fast"], check=True, capture_output=True, timeout=120)
    try:
        yield
    finally:
        if not _postgres_up():
            subprocess.run([*_cluster(), "start"], check=True, capture_output=True, timeout=120)
        wait_until(_postgres_up, timeout_s=60, what="PostgreSQL up again", interval_s=0.5)


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache, beat=True, concurrency=2) as running:
        yield running


def _jobs(service: Service, status: str) -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = service.client.get(
        "/v1/jobs", params={"status": status, "limit": 100}
    ).json()["jobs"]
    return jobs


def test_postgres_stopped_under_load_then_started_loses_no_accepted_job(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=180, what="the worker ready")
    backlog = [threading.Thread(target=ledger.submit_many, args=(40,)) for _ in range(3)]
    for thread in backlog:  # faster than two children run them: a backlog when the database goes
        thread.start()
    for thread in backlog:
        thread.join()
    unfinished = sum(len(_jobs(service, status)) for status in ("queued", "running"))
    stop = threading.Event()

    def submit_until_stopped() -> None:
        while not stop.is_set():
            ledger.submit()
            time.sleep(0.2)

    submitting = threading.Thread(target=submit_until_stopped)
    submitting.start()
    try:
        with postgres_down():
            time.sleep(OUTAGE_S)
        time.sleep(10)  # and submits again once it is back
    finally:
        stop.set()
        submitting.join()

    outcome = ledger.settle(timeout_s=300, logs=service.procs.logs)

    report(
        capsys,
        outcome,
        f"PostgreSQL stopped for {OUTAGE_S:.0f} s under load ({unfinished} jobs unfinished), then started",
    )
    assert unfinished > 0  # the outage met work in progress
    assert (outcome.lost, outcome.duplicated) == ([], 0)
    assert outcome.succeeded == outcome.accepted >= 120, outcome
    assert set(outcome.refused) == {503}, outcome.refused  # refused during the outage, as 503 only
    assert outcome.refused[503] >= OUTAGE_S  # ~5 submits a second, none of them accepted meanwhile
    assert outcome.slowest_submit_s <= 5.0, outcome.slowest_submit_s
    for name in ("api", "worker", "beat"):
        assert service.procs.proc(name).poll() is None, service.procs.output(name)[-3000:]
