"""What a quorum queue costs against a classic one on one RabbitMQ node: a measurement, not a test.

    .venv/bin/python -m tests.queue.queue_type_cost [--messages 3000] [--rounds 3]

Publishes visionq-sized messages the way the API does (persistent, one publisher confirm waited for
each), then consumes them the way a worker does (prefetch 2, one ack each), on a classic and on a
quorum queue in turn, each in a vhost of its own; rounds alternate so that both types meet the same
machine. The node is one of its own (tests/e2e/rabbit_cluster.py, so run it as root), started beside
the machine's default node: the CPU it reads from /proc is this node's alone, not that of the tests
other people run meanwhile. Prints messages/s and RabbitMQ's CPU per message, per round and as medians.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import sys
import time
from dataclasses import dataclass

import psutil
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Consumer, Producer

from tests.e2e.rabbit_cluster import Cluster, Node, rabbit_cluster, rabbitmqctl
from visionq import constants

# About the body of a visionq task message (Celery protocol 2: [args, kwargs, embed] with a job id).
_BODY = b'[["' + b"0" * 36 + b'"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
_HEADERS = {"lang": "py", "task": constants.DETECT_TASK, "id": "0" * 36, "retries": 0, "argsrepr": "x" * 40}


@dataclass
class Figures:
    queue_type: str
    publish_per_s: float
    consume_per_s: float
    publish_cpu_us: float  # RabbitMQ's CPU per message published (and confirmed)
    consume_cpu_us: float  # RabbitMQ's CPU per message delivered (and acked)


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of process `pid` and its descendants (a node's Erlang VM and its helpers)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived helper gone meanwhile
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _vhost(node: Node) -> str:
    name = f"visionq-cost-{secrets.token_hex(4)}"
    rabbitmqctl(node, "add_vhost", name)
    rabbitmqctl(node, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


def measure(cluster: Cluster, vhost: str, queue_type: str, messages: int) -> Figures:
    """One round on a new queue of `queue_type` in `vhost` of the cluster's one node, deleted afterwards."""
    (node,) = cluster.nodes
    url = node.url(vhost)

    def _broker_cpu_s() -> float:
        return _tree_cpu_s(cluster.pid(node))

    arguments = {"x-queue-type": "quorum"} if queue_type == "quorum" else None
    exchange = Exchange("cost", type="direct", durable=True, delivery_mode="persistent")  # type: ignore[no-untyped-call]
    queue = Queue("cost", exchange, routing_key="cost", durable=True, queue_arguments=arguments)  # type: ignore[no-untyped-call]
    with Connection(url, transport_options={"confirm_publish": True}) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        queue(channel).declare()  # type: ignore[no-untyped-call]
        producer = Producer(channel, exchange=exchange, routing_key="cost")  # type: ignore[no-untyped-call]
        cpu0, t0 = _broker_cpu_s(), time.perf_counter()
        for _ in range(messages):  # each publish returns once RabbitMQ confirmed it
            producer.publish(  # type: ignore[no-untyped-call]
                _BODY, headers=_HEADERS, content_type="application/json", content_encoding="utf-8"
            )
        t1, cpu1 = time.perf_counter(), _broker_cpu_s()
        received = 0

        def on_message(_body: object, message: object) -> None:
            nonlocal received
            received += 1
            message.ack()  # type: ignore[attr-defined]

        consumer_channel = conn.channel()
        consumer_channel.basic_qos(0, 2, False)
        with Consumer(consumer_channel, [queue], callbacks=[on_message], accept=["json"]):  # type: ignore[no-untyped-call]
            while received < messages:
                conn.drain_events(timeout=10)
        t2, cpu2 = time.perf_counter(), _broker_cpu_s()
        queue(channel).delete()  # type: ignore[no-untyped-call]
    per = 1e6 / messages
    return Figures(
        queue_type, messages / (t1 - t0), messages / (t2 - t1), (cpu1 - cpu0) * per, (cpu2 - cpu1) * per
    )


def _line(kind: str, rows: list[Figures]) -> str:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    return (
        f"{kind:8} publish {median([r.publish_per_s for r in rows]):6.0f}/s, "
        f"{median([r.publish_cpu_us for r in rows]):4.0f} us RabbitMQ CPU each | "
        f"consume {median([r.consume_per_s for r in rows]):6.0f}/s, "
        f"{median([r.consume_cpu_us for r in rows]):4.0f} us each\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: list[Figures] = []
    with rabbit_cluster(1) as cluster:
        vhosts = {kind: _vhost(cluster.nodes[0]) for kind in ("classic", "quorum")}
        for _ in range(args.rounds):
            for kind in ("classic", "quorum"):
                rows.append(measure(cluster, vhosts[kind], kind, args.messages))
                sys.stdout.write(_line(kind, rows[-1:]))
    sys.stdout.write(f"\nmedians of {args.rounds} rounds of {args.messages} messages:\n")
    for kind in ("classic", "quorum"):
        sys.stdout.write(_line(kind, [r for r in rows if r.queue_type == kind]))


if __name__ == "__main__":
    main()
