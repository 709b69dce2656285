"""JobPublisher: how the API hands a job to the workers, failing fast when the broker is away."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from kombu.exceptions import KombuError

from visionq import constants
from visionq.errors import BrokerUnavailable
from visionq.queue.app import BROKER_CONNECT_TIMEOUT_S

# Seconds to wait for a free pooled connection, for the socket write and for RabbitMQ's confirm.
# A healthy broker confirms in milliseconds; a blocked one (memory or disk alarm) never does.
PUBLISH_TIMEOUT_S = 5.0

# What a broker can throw at a publisher besides its transport's own errors (see _transport_errors).
_BROKER_ERRORS: tuple[type[BaseException], ...] = (OSError, KombuError)


class JobPublisher:
    """Publishes detection jobs (their ids only) to the workers' queue."""

    def __init__(self, app: Celery, *, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self._app = app
        self._timeout_s = timeout_s
        self._errors = _BROKER_ERRORS + _transport_errors(app)

    @property
    def app(self) -> Celery:
        """The Celery app it publishes with."""
        return self._app

    def publish(self, job_id: str) -> None:
        """Send job `job_id` to the workers; returns once the broker has it (RabbitMQ: confirmed).

        Raises BrokerUnavailable, within a few seconds, when the broker cannot be reached or refuses it.
        """
        try:
            with self._app.producer_pool.acquire(block=True, timeout=self._timeout_s) as producer:
                self._app.send_task(
                    constants.DETECT_TASK,
                    args=[job_id],
                    # The job id as the task id: Flower and `celery inspect` show the job's own id.
                    task_id=job_id,
                    queue=constants.QUEUE,
                    producer=producer,
                    timeout=self._timeout_s,
                    confirm_timeout=self._timeout_s,
                )
        except self._errors as exc:
            raise BrokerUnavailable(f"cannot publish job {job_id} to the broker: {_describe(exc)}") from exc

    def waiting(self) -> int:
        """How many messages wait in the jobs' queue (RabbitMQ: ready, not those a worker holds unacked).

        Raises BrokerUnavailable when the broker cannot be asked.
        """
        try:
            queue = next(q for q in self._app.conf.task_queues if q.name == constants.QUEUE)
            with self._app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CONNECT_TIMEOUT_S)
                # Declared as the workers declare it (a no-op when it exists): a queue no worker has
                # declared yet waits with nothing.
                declared = queue.bind(conn.default_channel).queue_declare()
                return int(declared.message_count)
        except self._errors as exc:
            raise BrokerUnavailable(f"cannot count the queued messages: {_describe(exc)}") from exc

    def ping(self) -> None:
        """Open a broker connection; raises BrokerUnavailable when that fails (the readiness check)."""
        try:
            with self._app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CONNECT_TIMEOUT_S)
                if conn.transport.driver_type == "filesystem":
                    _check_writable(Path(conn.transport_options["data_folder_out"]))
        except self._errors as exc:
            raise BrokerUnavailable(f"the broker is unreachable: {_describe(exc)}") from exc


def _transport_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """The transport's connection and channel errors: py-amqp's (a nacked confirm among them), redis'..."""
    conn = app.connection_for_write()
    try:
        errors: tuple[type[BaseException], ...] = (
            conn.connection_errors
            + conn.channel_errors
            + conn.recoverable_connection_errors
            + conn.recoverable_channel_errors
        )
    finally:
        conn.release()
    return errors


def _check_writable(folder: Path) -> None:
    """The embedded broker is a folder: reachable means the worker can find new message files in it."""
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise BrokerUnavailable(f"the broker folder {folder} is missing or not writable")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
