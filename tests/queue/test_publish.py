"""JobPublisher: a message per job id on the durable queue, and a fast BrokerUnavailable otherwise."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from visionq import constants
from visionq.config import Settings
from visionq.errors import BrokerUnavailable
from visionq.queue import JobPublisher, create_celery_app

# The API answers 503 this fast when the broker is down; the brief allows a few seconds.
FAIL_FAST_S = 10.0

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1//"


def test_a_published_message_carries_only_the_job_id_as_persistent_json(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=None, database_url=None)
    job_id = str(uuid.uuid4())

    JobPublisher(create_celery_app(settings)).publish(job_id)

    files = list((settings.broker_dir / "messages").glob(f"*.{constants.QUEUE}.msg"))
    assert len(files) == 1
    message = json.loads(files[0].read_text())
    assert message["content-type"] == "application/json"
    assert message["properties"]["delivery_mode"] == 2
    assert message["properties"]["delivery_info"]["routing_key"] == constants.QUEUE
    assert message["headers"]["task"] == constants.DETECT_TASK
    assert message["headers"]["id"] == job_id
    assert message["properties"]["body_encoding"] == "base64"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([job_id], {})


def test_publishing_to_a_dead_broker_raises_broker_unavailable_within_seconds(tmp_path: Path) -> None:
    publisher = JobPublisher(create_celery_app(Settings(data_dir=tmp_path, broker_url=DEAD_BROKER)))

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot publish job"):
        publisher.publish(str(uuid.uuid4()))

    assert time.monotonic() - started < FAIL_FAST_S


def test_a_broker_that_accepts_but_never_answers_fails_the_publish_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as silent:  # the kernel completes the TCP handshake; nobody ever speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//"
        publisher = JobPublisher(create_celery_app(Settings(data_dir=tmp_path, broker_url=url)))

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="timed out"):
            publisher.publish(str(uuid.uuid4()))

        assert time.monotonic() - started < FAIL_FAST_S


def test_ping_of_a_dead_broker_raises_broker_unavailable_within_seconds(tmp_path: Path) -> None:
    publisher = JobPublisher(create_celery_app(Settings(data_dir=tmp_path, broker_url=DEAD_BROKER)))

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        publisher.ping()

    assert time.monotonic() - started < FAIL_FAST_S


def test_ping_of_the_embedded_broker_fails_when_its_folder_is_gone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=None, database_url=None)
    publisher = JobPublisher(create_celery_app(settings))
    publisher.ping()

    (settings.broker_dir / "messages").rmdir()

    with pytest.raises(BrokerUnavailable, match="missing or not writable"):
        publisher.ping()


@pytest.mark.rabbitmq
def test_a_published_job_waits_on_rabbitmq_as_a_persistent_json_message_with_its_id(
    rabbitmq_vhosts: Callable[[], str], tmp_path: Path
) -> None:
    # A vhost of this test's own: no worker of the session consumes there.
    app = create_celery_app(Settings(data_dir=tmp_path, broker_url=rabbitmq_vhosts()))
    publisher = JobPublisher(app)
    job_id = str(uuid.uuid4())

    publisher.ping()
    publisher.publish(job_id)

    with app.connection_for_read() as conn:
        message = conn.default_channel.basic_get(queue=constants.QUEUE, no_ack=True)
    assert message is not None, "the confirmed message is not on the queue"
    args, kwargs, _embed = json.loads(message.body)
    assert (args, kwargs) == ([job_id], {})
    assert message.content_type == "application/json"
    assert message.properties["delivery_mode"] == 2  # persistent: it survives a broker restart
