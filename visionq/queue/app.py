"""The Celery configuration every visionq process shares: JSON messages with a job id, one durable queue.

`configure` sets what producers and consumers must agree on (serializers, the queue, delivery mode, the
broker's transport options, beat's schedule); the worker adds its consumer-side options on top of it
(`visionq.worker.app`). `create_celery_app` is the plain app the API, beat and Flower use.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from visionq import constants
from visionq.config import Settings
from visionq.queue import embedded

# Seconds to open a broker connection (TCP + handshake). The API publishes inside a request, so a dead
# broker must cost it a few seconds and a 503, never a hung request.
BROKER_CONNECT_TIMEOUT_S = 2.0

# Publishing retries a dropped pooled connection (RabbitMQ closes idle ones) once or twice, then gives
# up: 3 connects of at most 2 s plus 1.5 s of sleeps keeps the worst case under 8 s.
PUBLISH_RETRY_POLICY: dict[str, float] = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}

# A worker whose broker went away tries again after 0.5 s, then 1 s, 1.5 s and every 2 s, for as long as
# the outage lasts. kombu's default waits 2, 4, 6 ... up to 30 s between tries (a worker came back 6-9 s
# after RabbitMQ did), and Celery gives up after 100 of them: a worker must outlast any outage.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 2.0


class _Connection(Connection):
    """kombu's Connection with visionq's reconnect pace (`RECONNECT_MAX_S`) for `ensure_connection`."""

    def ensure_connection(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("interval_start", RECONNECT_FIRST_S)
        kwargs.setdefault("interval_step", RECONNECT_FIRST_S)
        kwargs.setdefault("interval_max", RECONNECT_MAX_S)
        return super().ensure_connection(*args, **kwargs)  # type: ignore[no-untyped-call]


class ReconnectingAMQP(AMQP):  # type: ignore[misc]  # Celery ships no type information
    """Celery's AMQP layer, making its connections `_Connection`s."""

    Connection = _Connection


_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
_REDIS_SCHEMES = ("redis", "rediss")


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app for `settings`' broker (RabbitMQ, Redis or the embedded one), with no tasks of its own."""
    return configure(Celery("visionq"), settings)


def configure(app: Celery, settings: Settings) -> Celery:
    """Give `app` the broker and the wire format every visionq process agrees on; returns it."""
    app.amqp_cls = f"{__name__}:ReconnectingAMQP"
    exchange = Exchange(  # type: ignore[no-untyped-call]
        constants.QUEUE, type="direct", durable=True, delivery_mode="persistent"
    )
    queue, webhooks = (
        Queue(  # type: ignore[no-untyped-call]
            name,
            exchange,
            routing_key=name,
            durable=True,
            queue_arguments=queue_arguments(settings) or None,
        )
        for name in (constants.QUEUE, constants.WEBHOOK_QUEUE)
    )
    app.conf.update(
        broker_url=_broker_url(settings),
        # The embedded broker is kombu's filesystem transport with whole-file writes (embedded.py).
        broker_transport=embedded.TRANSPORT if settings.embedded_broker else None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        # The job table is the single source of truth: no result backend, nothing stored by Celery.
        result_backend=None,
        task_ignore_result=True,
        task_queues=(queue, webhooks),
        task_default_queue=constants.QUEUE,
        task_default_exchange=constants.QUEUE,
        task_default_exchange_type="direct",
        task_default_routing_key=constants.QUEUE,
        task_default_delivery_mode="persistent",
        task_routes={
            name: {"queue": constants.QUEUE}
            for name in (constants.DETECT_TASK, constants.PURGE_TASK, constants.RECOVER_TASK)
        }
        | {constants.WEBHOOK_TASK: {"queue": constants.WEBHOOK_QUEUE}},
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # for ever, at most RECONNECT_MAX_S apart
        # No task-sent event from the API: it cost 0.16 ms of API CPU and 0.05 ms of RabbitMQ's per job
        # (measured side by side, AMX Xeon), to show Flower a job before a worker takes it. Queued jobs
        # are in the job table (GET /v1/jobs?status=queued); Flower shows a job from task-received on.
        task_send_sent_event=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule=_beat_schedule(settings),
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        broker_transport_options=_transport_options(settings),
    )
    return app


def _broker_url(settings: Settings) -> str:
    # kombu ignores the filesystem URL's host, but logs a warning in every process when there is none.
    return "filesystem://localhost//" if settings.embedded_broker else settings.resolved_broker_url


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The hourly purge, and the reconciliation of the job table with the broker every 30 s.

    Every broker can lose a message a job depends on: Redis all of them when it restarts without
    persistence, kombu's filesystem transport those a killed worker held, RabbitMQ a non-durable one
    or a whole node's disk. The job table is the single source of truth, so beat has the workers
    publish again the jobs with no message left (visionq.worker.tasks.reconcile).
    """
    return {
        "purge-expired-jobs": {
            "task": constants.PURGE_TASK,
            "schedule": float(constants.PURGE_INTERVAL_S),
            "options": {"queue": constants.QUEUE},
        },
        "recover-lost-jobs": {
            "task": constants.RECOVER_TASK,
            "schedule": float(constants.RECOVER_INTERVAL_S),
            "options": {"queue": constants.QUEUE},
        },
    }


def broker_scheme(url: str) -> str:
    """A broker URL's scheme, lower-case and without a transport suffix (`amqp`, `redis`...)."""
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def is_amqp(url: str) -> bool:
    """Whether the broker URL is RabbitMQ's (AMQP 0-9-1 through py-amqp)."""
    return broker_scheme(url) in _AMQP_SCHEMES


def jobs_queue(app: Celery) -> Any:
    """The jobs' queue (a kombu Queue) as `configure` declared it on `app`; bind it to a channel."""
    return app.amqp.queues[constants.QUEUE]


def queue_arguments(settings: Settings) -> dict[str, Any]:
    """The x-arguments the jobs' queue is declared with: every process declares it alike, and RabbitMQ
    refuses a declaration whose arguments differ from the existing queue's (PRECONDITION_FAILED).

    On RabbitMQ, a quorum queue is asked for by type. A classic queue is declared with no argument at
    all, as visionq always declared it, so an existing deployment's queue stays equivalent. Redis and
    the embedded broker take no arguments.
    """
    quorum = is_amqp(settings.resolved_broker_url) and settings.queue_type == "quorum"
    return {"x-queue-type": "quorum"} if quorum else {}


def _transport_options(settings: Settings) -> dict[str, Any]:
    scheme = broker_scheme(settings.resolved_broker_url)
    if settings.embedded_broker:
        return embedded.transport_options(settings.broker_dir)
    if scheme in _AMQP_SCHEMES:
        # Publisher confirms: publish() returns only once RabbitMQ has taken the message.
        return {"confirm_publish": True}
    if scheme in _REDIS_SCHEMES:
        return {
            # Redis redelivers an unacked message after this: a little above the task time limit, so a
            # killed worker's job comes back in minutes (not the default hour) and a live one isn't
            # handed out twice.
            "visibility_timeout": settings.task_time_limit + 60,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
            "socket_timeout": BROKER_CONNECT_TIMEOUT_S * 2,
        }
    return {}
