"""A soak (fault scenario 11): steady load for VISIONQ_SOAK_S seconds (30 minutes unless told), a pool
child SIGKILLed every minute and RabbitMQ stopped for 10 s every 10 minutes. Nothing accepted is lost
or run twice, and the API's and the worker's resident memory stay flat (their curve is printed).

Only `make faults` runs it (`-m faults`; `make test` deselects the `soak` marker). It stops the
machine's RabbitMQ application and always starts it again.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.e2e.test_faults import broker_stopped
from tests.helpers import wait_until
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

SOAK_S = float(os.environ.get("VISIONQ_SOAK_S", "1800"))
SUBMIT_EVERY_S = 0.2  # 5 jobs a second: a steady load two worker children keep up with
KILL_EVERY_S = 60.0
BROKER_STOP_EVERY_S = 600.0
BROKER_STOP_S = 10.0
SAMPLE_EVERY_S = 60.0

pytestmark = [
    pytest.mark.faults,
    pytest.mark.soak,
    pytest.mark.slow,
    pytest.mark.rabbitmq,
    pytest.mark.postgres,
    pytest.mark.timeout(SOAK_S + 600),
]


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache, beat=True, concurrency=2) as running:
        yield running


def _rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a worker's pool), in MiB."""
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except psutil.NoSuchProcess:
            pass  # a child that was just killed
    return total / 2**20


def test_half_an_hour_of_load_with_kills_and_broker_stops_loses_nothing_and_memory_stays_flat(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=180, what="the worker ready")
    api, worker = service.procs.pid("api"), service.procs.pid("worker")
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            ledger.submit()
            time.sleep(SUBMIT_EVERY_S)

    submitting = threading.Thread(target=load)
    curve: list[tuple[float, float, float]] = []  # (minute, API MiB, worker MiB)
    kills = stops = 0
    chance = random.Random(11)
    started = time.monotonic()
    next_kill, next_stop, next_sample = KILL_EVERY_S, BROKER_STOP_EVERY_S / 2, 0.0
    submitting.start()
    try:
        while (elapsed := time.monotonic() - started) < SOAK_S:
            if elapsed >= next_sample:
                curve.append((elapsed / 60, _rss_mib(api), _rss_mib(worker)))
                next_sample += SAMPLE_EVERY_S
            if elapsed >= next_kill:
                children = psutil.Process(worker).children()
                if children:
                    os.kill(chance.choice(children).pid, signal.SIGKILL)
                    kills += 1
                next_kill += KILL_EVERY_S
            if elapsed >= next_stop:
                with broker_stopped():
                    time.sleep(BROKER_STOP_S)
                stops += 1
                next_stop += BROKER_STOP_EVERY_S
            time.sleep(1.0)
    finally:
        stop.set()
        submitting.join()

    outcome = ledger.settle(timeout_s=300, logs=service.procs.logs)
    curve.append(((time.monotonic() - started) / 60, _rss_mib(api), _rss_mib(worker)))

    report(
        capsys,
        outcome,
        f"Soak: {SOAK_S / 60:.0f} min at 5 jobs/s, {kills} children killed, {stops} broker stops",
    )
    with capsys.disabled():
        sys.stdout.write("minute  API MiB  worker MiB (main + children)\n")
        sys.stdout.write("".join(f"{m:6.1f}  {a:7.0f}  {w:10.0f}\n" for m, a, w in curve))
    assert (outcome.lost, outcome.duplicated) == ([], 0), outcome
    assert outcome.succeeded + sum(outcome.failed.values()) == outcome.accepted > 0
    assert set(outcome.failed) <= {"too_many_attempts"}  # only a job killed on every delivery may fail
    assert set(outcome.refused) <= {503}, outcome.refused  # refused only while RabbitMQ was stopped
    assert outcome.slowest_submit_s <= 5.0
    # Flat: after the first tenth (models loaded, pools warm), no process grows by more than 64 MiB.
    warm = [sample for sample in curve if sample[0] >= SOAK_S / 600]
    for column, name in ((1, "API"), (2, "worker")):
        values = [sample[column] for sample in warm]
        assert max(values) - values[0] < 64, f"{name} memory grew: {curve}"
