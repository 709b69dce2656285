"""`visionq dead-letters`: lists what workers parked (never a body) and leaves it parked; --purge deletes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import settings_of
from visionq import constants
from visionq.cli import app
from visionq.queue import create_celery_app
from visionq.queue.dead import REFUSED_HEADER, DeadLetters

pytestmark = pytest.mark.rabbitmq


def test_dead_letters_are_listed_without_their_bodies_then_purged(
    rabbitmq_vhosts: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = rabbitmq_vhosts()
    monkeypatch.setenv("VISIONQ_BROKER_URL", broker)
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    celery = create_celery_app(settings_of(broker_url=broker))
    assert DeadLetters(celery).peek() == (0, [])  # declares the queue, as a worker does
    with celery.producer_pool.acquire(block=True) as producer:
        for body, reason in (
            (b"SECRET-BODY-1", "cannot be decoded: DecodeError"),
            (b"SECRET-2", "is not a task"),
        ):
            producer.publish(
                body,
                exchange="",
                routing_key=constants.DEAD_LETTER_QUEUE,
                headers={REFUSED_HEADER: reason, "task": constants.DETECT_TASK},
                content_type="application/json",
                content_encoding="utf-8",
            )

    listed = CliRunner().invoke(app, ["dead-letters"])
    assert listed.exit_code == 0, listed.output
    assert "2 message(s) in visionq.dead" in listed.stdout
    assert "cannot be decoded: DecodeError" in listed.stdout and "is not a task" in listed.stdout
    assert "SECRET" not in listed.stdout
    assert DeadLetters(celery).peek()[0] == 2  # listing leaves them parked

    purged = CliRunner().invoke(app, ["dead-letters", "--purge"])
    assert purged.exit_code == 0, purged.output
    assert "purged 2 message(s)" in purged.stdout
    assert DeadLetters(celery).peek() == (0, [])
    celery.close()
