"""JobPublisher: how the API hands a job to the workers, failing fast when the broker is away."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from celery import Celery
from kombu.exceptions import KombuError

from visionq import constants
from visionq.errors import BrokerUnavailable
from visionq.queue.app import BROKER_CONNECT_TIMEOUT_S, is_amqp, jobs_queue

# Seconds a publish may take in all, retries included: a healthy broker confirms in milliseconds, and a
# submit must answer within 5 s even when the broker does not.
PUBLISH_TIMEOUT_S = 4.0

# Seconds one socket read or write of a publishing connection may block. A RabbitMQ in a memory or
# disk alarm blocks its publishers: it confirms nothing, and stops reading their sockets, so kombu's
# close of the failed channel waited for a CloseOk for ever (a request hung, its thread for good).
PUBLISH_SOCKET_TIMEOUT_S = 2.0

# Publishes in flight at once. Each runs in this pool so the caller waits at most PUBLISH_TIMEOUT_S,
# whatever kombu does inside (its retries, a close that blocks until the socket timeout).
_PUBLISH_THREADS = 16

# What a broker can throw at a publisher besides its transport's own errors (see _transport_errors).
_BROKER_ERRORS: tuple[type[BaseException], ...] = (OSError, KombuError)


class JobPublisher:
    """Publishes detection jobs (their ids only) to the workers' queue."""

    def __init__(self, app: Celery, *, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self._app = app
        self._timeout_s = timeout_s
        self._errors = _BROKER_ERRORS + _transport_errors(app)
        self._sender = ThreadPoolExecutor(_PUBLISH_THREADS, thread_name_prefix="visionq-publish")

    @property
    def app(self) -> Celery:
        """The Celery app it publishes with."""
        return self._app

    def publish(self, job_id: str) -> None:
        """Send job `job_id` to the workers; returns once the broker has it (RabbitMQ: confirmed).

        Raises BrokerUnavailable within `timeout_s` when the broker cannot be reached, refuses the
        message, or does not confirm it (RabbitMQ blocks publishers in a memory or disk alarm). A send
        still in flight then may yet reach the broker: a message for a job the caller discards, which
        a worker leaves alone (the claim finds no job).
        """
        # The job id as the task id: Flower and `celery inspect` show the job's own id.
        self._publish(constants.DETECT_TASK, constants.QUEUE, job_id, task_id=job_id)

    def publish_webhook(self, job_id: str) -> None:
        """Send the webhook of finished job `job_id` to the workers (its own queue); raises as `publish`.
        A second message for one webhook sends nothing twice: a delivered webhook is not pending."""
        self._publish(constants.WEBHOOK_TASK, constants.WEBHOOK_QUEUE, job_id)

    def _publish(self, task: str, queue: str, job_id: str, *, task_id: str | None = None) -> None:
        sending = self._sender.submit(self._send, task, queue, job_id, task_id)
        try:
            sending.result(timeout=self._timeout_s)
        except FutureTimeout:
            raise BrokerUnavailable(
                f"the broker did not take job {job_id} within {self._timeout_s:g} s (a memory or disk alarm "
                "blocks publishers)"
            ) from None
        except self._errors as exc:
            raise BrokerUnavailable(f"cannot publish job {job_id} to the broker: {_describe(exc)}") from exc

    def _send(self, task: str, queue: str, job_id: str, task_id: str | None) -> None:
        with self._app.producer_pool.acquire(block=True, timeout=self._timeout_s) as producer:
            self._app.send_task(
                task,
                args=[job_id],
                task_id=task_id,
                queue=queue,
                producer=producer,
                timeout=self._timeout_s,
                confirm_timeout=self._timeout_s,
            )

    def waiting(self) -> int:
        """How many messages wait in the jobs' queue (RabbitMQ: ready, not those a worker holds unacked).

        Raises BrokerUnavailable when the broker cannot be asked.
        """
        try:
            queue = jobs_queue(self._app)
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


def publishing_app(app: Celery) -> Celery:
    """`app` (a `create_celery_app`), its AMQP sockets bounded by PUBLISH_SOCKET_TIMEOUT_S: what a
    process that only publishes uses (the API). A worker's consumer keeps blocking reads."""
    options = dict(app.conf.broker_transport_options or {})
    if is_amqp(app.conf.broker_url):
        options.update(read_timeout=PUBLISH_SOCKET_TIMEOUT_S, write_timeout=PUBLISH_SOCKET_TIMEOUT_S)
    app.conf.broker_transport_options = options
    return app


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
