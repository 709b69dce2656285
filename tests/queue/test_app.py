"""The wire format every visionq process shares, and each broker's transport options."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from kombu.exceptions import OperationalError

from tests.helpers import visionq_env
from visionq import constants
from visionq.config import Settings
from visionq.queue import JobPublisher, create_celery_app
from visionq.worker.app import EXIT_QUEUE_CONFLICT

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def test_jobs_travel_as_json_on_a_durable_queue_of_persistent_messages_with_no_result_backend(
    tmp_path: Path,
) -> None:
    conf = create_celery_app(Settings(data_dir=tmp_path, broker_url=RABBITMQ)).conf

    jobs, webhooks = conf.task_queues
    for queue, name in ((jobs, constants.QUEUE), (webhooks, constants.WEBHOOK_QUEUE)):
        assert (queue.name, queue.routing_key, queue.durable) == (name, name, True)
        assert (queue.exchange.name, queue.exchange.type, queue.exchange.durable) == (
            constants.QUEUE,
            "direct",
            True,
        )
        assert queue.exchange.delivery_mode == 2
    assert conf.task_default_delivery_mode == "persistent"
    assert (conf.task_serializer, conf.result_serializer, conf.accept_content) == ("json", "json", ["json"])
    assert conf.result_backend is None and conf.task_ignore_result
    assert conf.broker_url == RABBITMQ
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert not conf.task_send_sent_event  # queued jobs are the job table's to show, not Flower's


def test_every_task_is_routed_to_the_jobs_queue_by_name_and_webhooks_to_their_own(tmp_path: Path) -> None:
    # The API sends tasks by name: it loads none of the worker's code (tests/test_imports.py).
    routes = create_celery_app(Settings(data_dir=tmp_path, broker_url=RABBITMQ)).conf.task_routes

    assert routes == {
        constants.DETECT_TASK: {"queue": constants.QUEUE},
        constants.PURGE_TASK: {"queue": constants.QUEUE},
        constants.RECOVER_TASK: {"queue": constants.QUEUE},
        constants.WEBHOOK_TASK: {"queue": constants.WEBHOOK_QUEUE},
    }


def test_redis_redelivers_a_lost_job_soon_after_the_time_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0", task_time_limit=300)

    options = create_celery_app(settings).conf.broker_transport_options

    assert 300 < options["visibility_timeout"] <= 600
    assert "confirm_publish" not in options


def test_the_embedded_broker_is_one_folder_shared_by_producers_and_consumers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=None)

    options = create_celery_app(settings).conf.broker_transport_options

    assert options["data_folder_in"] == options["data_folder_out"]
    for key in ("data_folder_in", "control_folder", "processed_folder"):
        assert Path(options[key]).is_dir() and Path(options[key]).is_relative_to(settings.broker_dir)
    assert options["store_processed"] is False


def test_beat_reconciles_the_job_table_with_every_broker(tmp_path: Path) -> None:
    for broker_url in (None, RABBITMQ, "redis://127.0.0.1:6379/0"):
        schedule = create_celery_app(Settings(data_dir=tmp_path, broker_url=broker_url)).conf.beat_schedule
        assert {e["task"] for e in schedule.values()} == {constants.PURGE_TASK, constants.RECOVER_TASK}
        assert all(e["options"] == {"queue": constants.QUEUE} for e in schedule.values())
        recover = next(e for e in schedule.values() if e["task"] == constants.RECOVER_TASK)
        assert recover["schedule"] == constants.RECOVER_INTERVAL_S


def test_a_broker_that_went_away_is_tried_again_for_ever_at_most_two_seconds_apart(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_celery_app(Settings(data_dir=tmp_path, broker_url=f"amqp://guest:guest@127.0.0.1:{port}//"))
    assert app.conf.broker_connection_max_retries is None  # a worker never gives up
    waits: list[float] = []

    # What a worker's consumer calls to reconnect (with no limit; 5 tries here).
    with app.connection_for_read() as conn, pytest.raises(OperationalError):
        conn.ensure_connection(lambda _exc, interval: waits.append(interval), 5)

    assert waits == [0.5, 1.0, 1.5, 2.0, 2.0]


def test_rabbitmq_gets_a_quorum_queue_when_asked_and_other_brokers_get_no_queue_arguments(
    tmp_path: Path,
) -> None:
    def arguments(broker_url: str | None, queue_type: Literal["classic", "quorum"]) -> object:
        settings = Settings(data_dir=tmp_path, broker_url=broker_url, queue_type=queue_type)
        jobs, webhooks = create_celery_app(settings).conf.task_queues
        assert webhooks.queue_arguments == jobs.queue_arguments  # both of the one type
        return jobs.queue_arguments

    assert arguments(RABBITMQ, "quorum") == {"x-queue-type": "quorum"}
    failover = f"{RABBITMQ};amqp://guest:guest@127.0.0.1:5673//"  # a cluster's nodes in turn
    assert arguments(failover, "quorum") == {"x-queue-type": "quorum"}
    # A classic queue is declared as it always was, so a deployment's existing queue stays equivalent.
    assert arguments(RABBITMQ, "classic") is None
    assert arguments("redis://127.0.0.1:6379/0", "quorum") is None
    assert arguments(None, "quorum") is None


@pytest.mark.rabbitmq
def test_every_process_declares_the_queue_of_the_type_configured(
    rabbitmq_vhosts: Callable[[], str], tmp_path: Path
) -> None:
    url = rabbitmq_vhosts()
    vhost = url.rsplit("/", 1)[1]
    app = create_celery_app(Settings(data_dir=tmp_path, broker_url=url, queue_type="quorum"))

    JobPublisher(app).waiting()  # declares the queue as every process does

    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert listed == [constants.QUEUE, "quorum"]


@pytest.mark.rabbitmq
def test_a_worker_asked_for_a_quorum_queue_where_a_classic_one_exists_exits_with_a_sentence(
    rabbitmq_vhosts: Callable[[], str], tmp_path: Path
) -> None:
    url = rabbitmq_vhosts()
    JobPublisher(create_celery_app(Settings(data_dir=tmp_path, broker_url=url))).waiting()  # classic

    worker = subprocess.run(
        [sys.executable, "-m", "visionq", "worker", "--concurrency", "1"],
        env=visionq_env(tmp_path, broker_url=url, queue_type="quorum"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert worker.returncode == EXIT_QUEUE_CONFLICT, worker.stdout + worker.stderr
    (line,) = [line for line in worker.stderr.splitlines() if "CRITICAL" in line]
    assert "VISIONQ_QUEUE_TYPE" in line and "inequivalent arg 'x-queue-type'" in line
    assert "Traceback" not in worker.stderr
