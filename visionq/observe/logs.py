"""visionq's log lines: text (the default) or one JSON object a line (`VISIONQ_LOG_FORMAT=json`).

Standard library logging throughout, not structlog: uvicorn, Celery and Flower all log through it and
take a `logging.Formatter`, so one formatter class covers every process without a second logging
system to bridge. A line about one job carries its id as `job_id` (`extra={"job_id": ...}` at the call).
Messages are what visionq's code writes, never a request's headers or an image's bytes.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The JSON formatter, as logging.config.dictConfig names it (uvicorn's log_config).
JSON_FORMATTER: dict[str, str] = {"()": f"{__name__}.JsonFormatter"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, message, pid; job_id when the record
    has one; exc_info (the traceback's text) when it has an exception. Newlines stay inside the strings."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = str(job_id)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def uvicorn_log_config(base: dict[str, Any], log_format: LogFormat) -> dict[str, Any]:
    """uvicorn's `log_config` (`base`: a copy of uvicorn.config.LOGGING_CONFIG), plus visionq's own loggers
    through its handler; in JSON with `log_format="json"`, uvicorn's access and error lines too."""
    config = dict(base)
    config["loggers"] = {
        **base["loggers"],
        "visionq": {"handlers": ["default"], "level": "INFO", "propagate": False},
    }
    if log_format == "json":
        config["formatters"] = {name: dict(JSON_FORMATTER) for name in base["formatters"]}
    return config


def use_json_in_celery() -> None:
    """In a Celery worker or beat about to start: its log handlers get the JSON formatter once Celery has
    set them up (it replaces the root logger's handlers with its own, the task and pool loggers' too)."""
    from celery import signals

    signals.after_setup_logger.connect(_json_root, weak=False, dispatch_uid=f"{__name__}.root")
    signals.after_setup_task_logger.connect(_json_handlers, weak=False, dispatch_uid=f"{__name__}.task")


def _json_root(logger: logging.Logger, **_: Any) -> None:
    from celery.utils.log import get_multiprocessing_logger

    _json_handlers(logger)
    pool = get_multiprocessing_logger()  # billiard's: "Process 'ForkPoolWorker-1' ... exited with ..."
    if pool is not None:
        _json_handlers(pool)


def _json_handlers(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def log_to_stderr(log_format: LogFormat, *, level: int = logging.INFO) -> None:
    """The root logger writes `level` and above to stderr in `log_format`, Python's warnings included
    (processes no framework configures: `visionq up` itself, Flower; a worker until Celery takes over)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
