"""create_celery_app: the delivery guarantees and limits each broker gets, checked on the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from visionq import constants
from visionq.config import Settings
from visionq.worker import create_celery_app
from visionq.worker.runtime import RuntimeSlot, runtime_slot


def test_jobs_travel_as_json_on_a_durable_queue_with_late_acks_and_no_result_backend(tmp_path: Path) -> None:
    conf = create_celery_app(Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1//")).conf

    (queue,) = conf.task_queues
    assert (queue.name, queue.routing_key, queue.durable) == (constants.QUEUE, constants.QUEUE, True)
    assert (queue.exchange.name, queue.exchange.type, queue.exchange.durable) == (
        constants.QUEUE,
        "direct",
        True,
    )
    assert queue.exchange.delivery_mode == 2
    assert (conf.task_serializer, conf.result_serializer, conf.accept_content) == ("json", "json", ["json"])
    assert conf.result_backend is None and conf.task_ignore_result
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    # Waiting retries (a database outage) raise the prefetch; capped, the rest of a backlog stays queued.
    assert conf.worker_eta_task_limit == constants.MAX_HELD_MESSAGES
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert conf.worker_send_task_events and conf.task_send_sent_event


def test_the_soft_time_limit_falls_a_little_before_the_hard_one(tmp_path: Path) -> None:
    conf = create_celery_app(Settings(data_dir=tmp_path, task_time_limit=120)).conf

    assert conf.task_time_limit == 120
    assert 100 <= conf.task_soft_time_limit < 120


def test_a_time_limit_beyond_rabbitmqs_consumer_timeout_is_refused_when_settings_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="task_time_limit"):
        Settings(data_dir=tmp_path, task_time_limit=constants.RABBITMQ_CONSUMER_TIMEOUT_S)


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


def test_beat_recovers_stalled_jobs_only_where_the_broker_can_lose_messages(tmp_path: Path) -> None:
    embedded = create_celery_app(Settings(data_dir=tmp_path)).conf.beat_schedule
    rabbit = create_celery_app(
        Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672//")
    ).conf.beat_schedule

    assert {e["task"] for e in embedded.values()} == {constants.PURGE_TASK, constants.RECOVER_TASK}
    assert {e["task"] for e in rabbit.values()} == {constants.PURGE_TASK}
    assert all(e["options"] == {"queue": constants.QUEUE} for e in embedded.values())


def test_each_app_has_its_own_runtime_slot(tmp_path: Path) -> None:
    first, second = (create_celery_app(Settings(data_dir=tmp_path)) for _ in range(2))

    assert isinstance(runtime_slot(first), RuntimeSlot)
    assert runtime_slot(first) is not runtime_slot(second)
