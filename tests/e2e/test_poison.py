"""Poison (fault scenario 9): a job that kills its worker's child on every delivery, a job that hangs,
a pickle message and a message that is not JSON, among good jobs. Each ends bounded: the two jobs fail
with their codes, the two messages are parked in the dead-letter queue, the good jobs all run, and no
row is left running."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.ledger import Ledger, report
from tests.e2e.stack import Service, running_service
from tests.helpers import publish_raw, settings_of, slow_png, wait_until
from visionq import constants
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache
from visionq.queue import create_celery_app
from visionq.queue.dead import DeadLetters

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]

TIME_LIMIT_S = 10


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    # One child: the job running is the child's, so the test knows which process to kill or stop.
    with running_service(request, tmp_path, model_cache, task_time_limit=str(TIME_LIMIT_S)) as running:
        yield running


class Poisoner:
    """Watches two jobs: kills the worker's child whenever the first runs (on every delivery), and stops
    the child the first time the second runs (a hang)."""

    def __init__(self, service: Service, kill_job: str, hang_job: str) -> None:
        self.service, self.kill_job, self.hang_job = service, kill_job, hang_job
        self.worker = psutil.Process(service.procs.pid("worker"))
        self.kills = 0
        self.stopped = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def __enter__(self) -> Poisoner:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        killed_attempts: set[int] = set()
        while not self._done.is_set():
            for job_id in (self.kill_job, self.hang_job):
                job = self.service.client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] != "running":
                    continue
                children = self.worker.children()
                # A delivery past MAX_DELIVERIES fails the job at its claim, before it runs: no child to kill.
                runs = job["attempts"] <= constants.MAX_DELIVERIES
                if job_id == self.kill_job and runs and job["attempts"] not in killed_attempts and children:
                    killed_attempts.add(job["attempts"])
                    os.kill(children[0].pid, signal.SIGKILL)
                    self.kills += 1
                elif job_id == self.hang_job and not self.stopped and children:
                    os.kill(children[0].pid, signal.SIGSTOP)  # it cannot even take the soft limit's signal
                    self.stopped = True
            time.sleep(0.003)


def _publish_poison(service: Service) -> list[bytes]:
    """A pickle message and one that claims to be JSON, on the jobs' queue: what a stray producer sends."""
    task = {"task": constants.DETECT_TASK, "id": str(uuid.uuid4()), "lang": "py"}
    bodies: list[tuple[bytes, str, str, dict[str, Any]]] = [
        (pickle.dumps(((str(uuid.uuid4()),), {}, {})), "application/x-python-serialize", "binary", task),
        (b"\x00\x01 not json at all", "application/json", "utf-8", task),
    ]
    publish_raw(settings_of(broker_url=service.worker_env["VISIONQ_BROKER_URL"]), bodies)
    return [body for body, *_ in bodies]


def test_poison_jobs_and_messages_each_end_bounded_and_the_good_jobs_run(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    client = service.client
    wait_until(lambda: " ready." in service.procs.output("worker"), timeout_s=180, what="the worker ready")
    ledger = Ledger(client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))
    slow = slow_png()
    kill_job, hang_job = (
        client.post("/v1/jobs", files={"image": ("slow.png", slow)}).json()["id"] for _ in "kh"
    )
    ledger.accepted += [kill_job, hang_job]
    with Poisoner(service, kill_job, hang_job) as poisoner:
        _publish_poison(service)
        ledger.submit_many(20)
        outcome = ledger.settle(timeout_s=180, logs=service.procs.logs)

    app = create_celery_app(settings_of(broker_url=service.worker_env["VISIONQ_BROKER_URL"]))
    try:
        parked, letters = DeadLetters(app).peek()
    finally:
        app.close()
    running = client.get("/v1/jobs", params={"status": "running"}).json()["jobs"]
    report(
        capsys,
        outcome,
        f"Poison: a job killing its child ({poisoner.kills} kills), a hung job, 2 bad messages",
    )
    with capsys.disabled():
        sys.stdout.write(f"dead-lettered    {parked}: " + "; ".join(r.reason[:60] for r in letters) + "\n")
        sys.stdout.write(f"rows running     {len(running)}\n")

    assert (outcome.lost, outcome.duplicated) == ([], 0), outcome
    assert outcome.succeeded == 20 and dict(outcome.failed) == {"too_many_attempts": 1, "timeout": 1}
    killed = client.get(f"/v1/jobs/{kill_job}").json()
    hung = client.get(f"/v1/jobs/{hang_job}").json()
    assert (killed["error"]["code"], killed["attempts"]) == (
        "too_many_attempts",
        constants.MAX_DELIVERIES + 1,
    )
    assert poisoner.kills == constants.MAX_DELIVERIES
    assert (hung["error"]["code"], hung["attempts"]) == ("timeout", 1)
    assert parked == 2
    pickled, not_json = sorted(letters, key=lambda letter: "ContentDisallowed" not in letter.reason)
    assert "ContentDisallowed" in pickled.reason and "pickle" in pickled.reason  # refused, never unpickled
    assert not_json.reason.startswith("cannot be decoded: DecodeError")
    assert running == []
