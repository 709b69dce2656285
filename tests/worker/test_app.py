"""WorkerApp: the consumer's delivery guarantees and limits on top of the shared wire format, and one
Runtime per app and per process."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from celery import Celery
from pydantic import ValidationError

from visionq import constants
from visionq.config import Settings
from visionq.worker.app import WorkerApp
from visionq.worker.tasks import JobTask

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def test_messages_are_acked_late_one_at_a_time_and_requeued_when_a_child_dies(tmp_path: Path) -> None:
    conf = WorkerApp(Settings(data_dir=tmp_path, broker_url=RABBITMQ)).conf

    assert conf.task_acks_late and conf.task_reject_on_worker_lost and not conf.task_acks_on_timeout
    assert conf.worker_prefetch_multiplier == 1
    # Waiting retries (a database outage) raise the prefetch; capped, the rest of a backlog stays queued.
    assert conf.worker_eta_task_limit == constants.MAX_HELD_MESSAGES
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert not conf.worker_send_task_events  # until Flower enables them (tests/cli/test_up.py)
    # The wire format is the one every process shares.
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.broker_transport_options == {"confirm_publish": True}


def test_the_worker_app_registers_visionqs_tasks(tmp_path: Path) -> None:
    app = WorkerApp(Settings(data_dir=tmp_path))
    app.loader.import_default_modules()  # as a worker does at start

    for name in (constants.DETECT_TASK, constants.PURGE_TASK, constants.RECOVER_TASK):
        assert isinstance(app.tasks[name], JobTask)


def test_the_soft_time_limit_falls_a_little_before_the_hard_one(tmp_path: Path) -> None:
    conf = WorkerApp(Settings(data_dir=tmp_path, task_time_limit=120)).conf

    assert conf.task_time_limit == 120
    assert 100 <= conf.task_soft_time_limit < 120


def test_a_time_limit_beyond_rabbitmqs_consumer_timeout_is_refused_when_settings_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="task_time_limit"):
        Settings(data_dir=tmp_path, task_time_limit=constants.RABBITMQ_CONSUMER_TIMEOUT_S)


def test_each_app_builds_its_runtime_once_and_apps_share_none(tmp_path: Path) -> None:
    first, second = (WorkerApp(Settings(data_dir=tmp_path)) for _ in range(2))
    try:
        assert first.runtime is first.runtime
        assert first.runtime is not second.runtime
    finally:
        first.runtime.close()
        second.runtime.close()


def test_a_forked_child_builds_a_runtime_of_its_own(tmp_path: Path) -> None:
    app = WorkerApp(Settings(data_dir=tmp_path))
    parent = app.runtime
    try:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 0
            try:
                code = 0 if app.runtime is not parent and app.runtime is app.runtime else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert app.runtime is parent
    finally:
        parent.close()


def test_a_task_on_a_plain_celery_app_says_it_needs_the_worker_app(tmp_path: Path) -> None:
    task = JobTask()
    task.bind(Celery("foreign", set_as_current=False))

    with pytest.raises(RuntimeError, match="WorkerApp"):
        _ = task.runtime


def _log_through(logger_name: str, record: logging.LogRecord) -> logging.LogRecord | None:
    """What the named logger's filters make of `record` (None: dropped)."""
    return record if logging.getLogger(logger_name).filter(record) else None


def test_gossips_failed_close_of_its_dead_channel_is_one_warning_line_and_others_are_untouched(
    tmp_path: Path,
) -> None:
    WorkerApp(Settings(data_dir=tmp_path))  # installs the filter
    try:
        raise AttributeError("'NoneType' object has no attribute 'connection_errors'")
    except AttributeError as exc:
        error = exc
        exc_info = sys.exc_info()

    def record(step: str) -> logging.LogRecord:
        # As celery.bootsteps logs it (logger.exception) when a step fails to restart.
        return logging.LogRecord(
            "celery.bootsteps",
            logging.ERROR,
            __file__,
            1,
            "Error on %s %s: %r",
            ("restarting", step, error),
            exc_info,
        )

    gossip = _log_through("celery.bootsteps", record("Gossip"))
    assert gossip is not None and (gossip.levelname, gossip.exc_info) == ("WARNING", None)
    assert gossip.getMessage().startswith("Gossip restarts on the new broker connection")
    assert "connection_errors" in gossip.getMessage()
    other = _log_through("celery.bootsteps", record("Heart"))
    assert other is not None and other.levelname == "ERROR" and other.exc_info is not None
