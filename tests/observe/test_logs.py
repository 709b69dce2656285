"""The JSON log lines, and how uvicorn's and Celery's logging are given them."""

from __future__ import annotations

import copy
import io
import json
import logging
import sys
import warnings
from collections.abc import Iterator

import pytest
from celery import signals
from uvicorn.config import LOGGING_CONFIG

from visionq.observe.logs import (
    JSON_FORMATTER,
    JsonFormatter,
    log_to_stderr,
    use_json_in_celery,
    uvicorn_log_config,
)

JOB_ID = "3f2b8a56-1d2c-4a2e-9a43-6c1b1e5a9f00"


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("visionq.worker.tasks").makeRecord(
        "visionq.worker.tasks", logging.INFO, __file__, 1, message, args, None, extra=extra
    )
    return record


def test_a_record_is_one_json_object_with_its_job_id() -> None:
    line = JsonFormatter().format(_record("job %s succeeded: %d detection(s)", JOB_ID, 5, job_id=JOB_ID))

    entry = json.loads(line)
    assert set(entry) == {"ts", "level", "logger", "message", "pid", "job_id"}
    assert entry["message"] == f"job {JOB_ID} succeeded: 5 detection(s)"
    assert entry["job_id"] == JOB_ID
    assert (entry["level"], entry["logger"]) == ("INFO", "visionq.worker.tasks")
    assert entry["ts"].endswith("+00:00") and "T" in entry["ts"]


def test_a_record_about_no_job_has_no_job_id() -> None:
    entry = json.loads(JsonFormatter().format(_record("purged %d job(s)", 3)))

    assert "job_id" not in entry and entry["message"] == "purged 3 job(s)"


def test_a_traceback_stays_on_the_one_line() -> None:
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        record = _record("job %s: unexpected error", JOB_ID, job_id=JOB_ID)
        record.exc_info = sys.exc_info()

    line = JsonFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: line one\nline two")


def test_uvicorn_logs_in_json_when_asked_and_visionqs_loggers_go_through_its_handler() -> None:
    base = copy.deepcopy(LOGGING_CONFIG)

    text = uvicorn_log_config(base, "text")
    as_json = uvicorn_log_config(base, "json")

    assert text["formatters"] == LOGGING_CONFIG["formatters"]
    assert as_json["formatters"] == {"default": JSON_FORMATTER, "access": JSON_FORMATTER}
    for config in (text, as_json):
        assert config["loggers"]["visionq"] == {"handlers": ["default"], "level": "INFO", "propagate": False}
    assert base == LOGGING_CONFIG  # the copy given is left as it was


@pytest.fixture
def celery_json() -> Iterator[None]:
    use_json_in_celery()
    yield
    signals.after_setup_logger.disconnect(dispatch_uid="visionq.observe.logs.root")
    signals.after_setup_task_logger.disconnect(dispatch_uid="visionq.observe.logs.task")


def test_celerys_handlers_get_the_json_formatter_once_celery_has_set_them_up(celery_json: None) -> None:
    stream = io.StringIO()
    logger = logging.Logger("celery-like")
    logger.addHandler(logging.StreamHandler(stream))

    signals.after_setup_task_logger.send(
        sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False
    )
    logger.info("job %s queued", JOB_ID, extra={"job_id": JOB_ID})

    assert json.loads(stream.getvalue())["job_id"] == JOB_ID


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger's handlers and level, and warnings' capture, put back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logging.captureWarnings(False)
    root.handlers, root.level = handlers, level


def test_a_process_no_framework_configures_logs_json_warnings_included(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log_to_stderr("json", level=logging.WARNING)

    logging.getLogger("visionq.cli.up").info("left out: below the level")
    logging.getLogger("visionq.cli.up").error("api exited unexpectedly; stopped the others")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown, not raised as the test suite's filter would
        warnings.warn("a library's warning", UserWarning, stacklevel=1)

    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e["logger"]) for e in entries] == [
        ("ERROR", "visionq.cli.up"),
        ("WARNING", "py.warnings"),
    ]
    assert "a library's warning" in entries[1]["message"]
