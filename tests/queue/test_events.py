"""Finished jobs announced on each broker reach every listening API process (visionq.queue.events)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.helpers import Heard, wait_until
from visionq.config import Settings
from visionq.queue import create_celery_app
from visionq.queue.events import EXCHANGE, BrokerJobEvents, announce

BROKERS = [
    "embedded",
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BROKERS)
def celery_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    broker_url = None
    if request.param == "rabbitmq":
        create: Callable[[], str] = request.getfixturevalue("rabbitmq_vhosts")
        broker_url = create()
    elif request.param == "redis":
        broker_url = request.getfixturevalue("redis_url")
    settings = Settings(_env_file=None, data_dir=tmp_path, broker_url=broker_url)  # type: ignore[call-arg]
    app = create_celery_app(settings)
    yield app
    app.close()


def _heard(heard: Heard, count: int) -> bool:
    return heard.count() == count


def _listen(app: Celery) -> tuple[BrokerJobEvents, Heard]:
    events, heard = BrokerJobEvents(app), Heard()
    events.start(heard.change, heard.gap)
    assert events.listening.wait(15), "the listener never consumed"
    wait_until(lambda: heard.gaps == 1, timeout_s=5, what="the first on_gap")
    return events, heard


def test_an_announcement_reaches_every_listener(celery_app: Celery) -> None:
    first, heard_first = _listen(celery_app)
    second, heard_second = _listen(celery_app)
    try:
        announce(celery_app, "job-1", "succeeded")
        announce(celery_app, "job-2", "failed")

        for heard in (heard_first, heard_second):
            wait_until(functools.partial(_heard, heard, 2), timeout_s=10, what="both announcements")
            # In any order: the embedded broker orders files by millisecond, not within one.
            assert sorted(heard.changes) == [("job-1", "succeeded"), ("job-2", "failed")]
    finally:
        first.stop()
        second.stop()


def test_announcing_with_nobody_listening_is_harmless(celery_app: Celery) -> None:
    announce(celery_app, "job-1", "succeeded")  # no queue is bound: the fanout drops it

    events, heard = _listen(celery_app)
    try:
        announce(celery_app, "job-2", "succeeded")
        wait_until(lambda: heard.changes == [("job-2", "succeeded")], timeout_s=10, what="the later one")
    finally:
        events.stop()


def test_a_stopped_listener_on_the_embedded_broker_leaves_no_binding_behind(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    app = create_celery_app(settings)
    events, _ = _listen(app)
    table = settings.broker_dir / "control" / f"{EXCHANGE}.exchange"
    assert len(json.loads(table.read_text())) == 1

    events.stop()

    assert json.loads(table.read_text()) == []
    announce(app, "job-1", "succeeded")  # written for no one: no message file appears
    assert not [p for p in (settings.broker_dir / "messages").iterdir() if EXCHANGE in p.name]
    app.close()


def test_a_broker_that_is_away_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:1//"
    )
    app = create_celery_app(settings)
    announce(app, "job-1", "succeeded")
    assert "could not announce job job-1 as succeeded" in caplog.text
    app.close()
