"""A three-node RabbitMQ cluster with the jobs on a quorum queue: the node that leads the queue stops
mid-load, the others elect a new leader, and no accepted job is lost or run twice.

The cluster is the test's own (tests/e2e/rabbit_cluster.py): three extra nodes on loopback beside the
machine's default node, which this test leaves alone. Every visionq process gets a failover URL that
lists the three nodes; kombu moves to the next one when its node goes away.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import unreachable
from tests.e2e.ledger import Ledger, report
from tests.e2e.rabbit_cluster import RABBITMQ_SERVER, Cluster, ClusterError, Node, rabbit_cluster
from tests.e2e.stack import Service, running_service
from tests.helpers import wait_until
from visionq import constants
from visionq.bench.service import Uploads
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]

# Seconds the old leader stays stopped once a new one leads: clients keep submitting meanwhile.
OUTAGE_S = 10.0
# Pause between two submits: about the rate two worker children keep up with on a small machine.
SUBMIT_EVERY_S = 0.1


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not Path(RABBITMQ_SERVER).exists() or shutil.which("rabbitmqctl") is None:
        unreachable(f"RabbitMQ is not installed here ({RABBITMQ_SERVER})")
    if os.geteuid() != 0:
        unreachable("running extra RabbitMQ nodes as the rabbitmq user needs root")
    with rabbit_cluster(3) as running:
        yield running


@pytest.fixture(params=["rabbitmq-postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache, cluster: Cluster
) -> Iterator[Service]:
    with running_service(
        request, tmp_path, model_cache, broker_url=cluster.broker_url(), queue_type="quorum"
    ) as running:
        yield running


def _new_leader(cluster: Cluster, via: Node, old: Node) -> Node | None:
    """The queue's leader if it is not `old`; None while `via` cannot say (an election under way)."""
    try:
        leader = cluster.leader(constants.QUEUE, via=via)
    except ClusterError:
        return None
    return None if leader == old else leader


def _resumed_after_s(worker_log: str) -> float | None:
    """Seconds from the worker's first loss of its broker connection to the next task it received."""
    lost = None
    for line in worker_log.splitlines():
        if not line.startswith("[20"):
            continue
        if lost is None and "Connection to broker lost" in line:
            lost = _logged_at(line)
        elif lost is not None and "] Task visionq.detect[" in line and line.endswith("received"):
            return (_logged_at(line) - lost).total_seconds()
    return None


def _logged_at(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


class _Load:
    """Submits one job every SUBMIT_EVERY_S from a thread, until stopped."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._ledger.submit()
            self._stop.wait(SUBMIT_EVERY_S)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_the_node_leading_the_quorum_queue_stopped_mid_load_loses_no_accepted_job(
    service: Service, cluster: Cluster, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    # A second worker that tries the nodes from the second on: it consumes through another node than
    # the first worker (and the API), so one consumer has to fail over and one need not.
    service.start_worker(
        "worker-b", env={**service.worker_env, "VISIONQ_BROKER_URL": cluster.broker_url(first=1)}
    )
    wait_until(
        lambda: all(" ready." in service.procs.output(name) for name in ("worker", "worker-b")),
        timeout_s=90,
        what="both workers ready",
    )
    leader = cluster.leader(constants.QUEUE)
    # A quorum queue's leader starts on the node it was declared through (RabbitMQ's client-local
    # locator): the first worker's, which the API publishes through as well. Both lose it below.
    assert leader == cluster.nodes[0], f"the queue is led by {leader.name}"
    survivor = next(node for node in cluster.nodes if node != leader)
    ledger = Ledger(service.client, Uploads([("zidane.jpg", samples["zidane.jpg"])], unique=True))

    with _Load(ledger):
        wait_until(lambda: len(ledger.accepted) >= 40, timeout_s=60, what="40 jobs accepted", interval_s=0.1)
        cluster.stop_app(leader)
        at_stop = len(ledger.accepted)
        try:
            elected = wait_until(
                lambda: _new_leader(cluster, survivor, leader),
                timeout_s=30,
                what="a new leader of the queue",
                interval_s=0.5,
            )
            time.sleep(OUTAGE_S)
            during = len(ledger.accepted) - at_stop
        finally:
            cluster.start_app(leader)
        time.sleep(5)  # and a while with every node back

    outcome = ledger.settle(timeout_s=180, logs=service.procs.logs)
    resumed = _resumed_after_s(service.procs.output("worker"))
    again = "never" if resumed is None else f"{resumed:.2f} s after losing it"

    report(
        capsys,
        outcome,
        f"Quorum queue on 3 nodes: its leader stopped for {OUTAGE_S:.0f} s mid-load "
        f"({leader.name.split('@')[0]} -> {elected.name.split('@')[0]}, {during} jobs accepted meanwhile), "
        f"2 workers of 1 child; the one on that node took a job again {again}",
    )
    assert (outcome.lost, outcome.duplicated, dict(outcome.failed)) == ([], 0, {}), outcome
    assert outcome.accepted == outcome.succeeded
    assert during > 0  # the two nodes left kept taking jobs: what the third node's replica is for
    assert set(outcome.refused) <= {503}  # a submit caught by the failover is refused, never hung
    assert outcome.slowest_submit_s <= 5
    assert resumed is not None and resumed <= 5  # failed over to another node, and consuming again
