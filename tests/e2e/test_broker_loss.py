"""A broker that loses its messages: Redis restarted without persistence, with a backlog queued. Every
accepted job still ends, through beat's reconciliation of the job table with the broker.

This test stops the machine's Redis (`redis-cli shutdown nosave`) and always starts it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# How the machine's Redis runs (the brief, and .ci/run): nothing kept on disk.
_REDIS_SERVER = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _redis_up() -> bool:
    client = redis.Redis(port=6379, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


@contextmanager
def redis_down() -> Iterator[None]:
    """Redis shut down without saving (everything it held is gone); started again whatever happens."""
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=30)
    try:
        wait_until(lambda: not _redis_up(), timeout_s=30, what="Redis down", interval_s=0.1)
        yield
    finally:
        if not _redis_up():
            subprocess.run(_REDIS_SERVER, check=True, capture_output=True, timeout=30)
        wait_until(_redis_up, timeout_s=30, what="Redis up again", interval_s=0.1)


@pytest.fixture(params=["redis-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache, beat=True, concurrency=2) as running:
        yield running


@pytest.mark.long
def test_a_redis_restart_with_a_backlog_queued_loses_no_accepted_job(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    worker = service.procs.pid("worker")
    os.killpg(worker, signal.SIGSTOP)  # the worker paused: the backlog waits in Redis
    try:
        ledger.submit_many(60)
        with redis_down():
            ledger.submit_many(5)  # no broker: refused, quickly
    finally:
        os.killpg(worker, signal.SIGCONT)
    ledger.submit_many(20, every_s=0.05)

    outcome = ledger.settle(timeout_s=300, logs=service.procs.logs)

    report(capsys, outcome, "Redis restarted (no persistence), 60 jobs queued, 2 children")
    assert (outcome.lost, outcome.duplicated) == ([], 0)
    assert outcome.accepted == outcome.succeeded == 80, outcome
    assert dict(outcome.refused) == {503: 5}
    assert outcome.slowest_submit_s <= 5


def test_after_a_redis_restart_a_worker_still_hears_the_others_through_gossip(service: Service) -> None:
    # Celery logs "Error on restarting Gossip: AttributeError(... 'connection_errors')" and a traceback
    # here: closing the dead channel fails, but Gossip starts again on the new connection.
    def first(what: str) -> int:
        return service.procs.output("worker").count(what)

    wait_until(lambda: first(" ready.") == 1, timeout_s=90, what="the worker ready")
    settled = first("mingle: all alone")
    with redis_down():
        pass
    wait_until(lambda: first("mingle: all alone") > settled, timeout_s=30, what="the worker back on Redis")
    second = service.start_worker("second")
    wait_until(
        lambda: " ready." in service.procs.output("second"), timeout_s=90, what="the second worker ready"
    )
    time.sleep(5)  # heartbeats: the first worker's Gossip learns of the second

    os.killpg(second.pid, signal.SIGKILL)  # gone without a word: only Gossip can notice
    wait_until(
        lambda: first("missed heartbeat from second@") > 0,
        timeout_s=60,
        what="the first worker's Gossip missing the second's heartbeats",
        interval_s=0.5,
    )
    log = service.procs.output("worker")
    assert "Error on restarting Gossip" not in log and "Traceback" not in log
