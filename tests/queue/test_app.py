"""The wire format every visionq process shares, and each broker's transport options."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError

from visionq import constants
from visionq.config import Settings
from visionq.queue import create_celery_app

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def test_jobs_travel_as_json_on_a_durable_queue_of_persistent_messages_with_no_result_backend(
    tmp_path: Path,
) -> None:
    conf = create_celery_app(Settings(data_dir=tmp_path, broker_url=RABBITMQ)).conf

    (queue,) = conf.task_queues
    assert (queue.name, queue.routing_key, queue.durable) == (constants.QUEUE, constants.QUEUE, True)
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


def test_every_task_is_routed_to_the_one_queue_by_name(tmp_path: Path) -> None:
    # The API sends tasks by name: it loads none of the worker's code (tests/test_imports.py).
    routes = create_celery_app(Settings(data_dir=tmp_path, broker_url=RABBITMQ)).conf.task_routes

    assert routes == {
        name: {"queue": constants.QUEUE}
        for name in (constants.DETECT_TASK, constants.PURGE_TASK, constants.RECOVER_TASK)
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
