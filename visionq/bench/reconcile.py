"""`visionq bench reconcile`: what beat's reconciliation costs over a deep backlog, and how fast lost
jobs come back.

On a scratch database and broker (both must hold no jobs): N queued jobs, made as if submitted two
minutes ago, first with a message each on the broker (a healthy backlog: reconciliation publishes
nothing), then with every message gone (the broker lost them all: it publishes them again, a batch per
period). Each reconciliation is timed as beat's task runs it; the jobs and messages are removed after.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from visionq import constants
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.queue import JobPublisher, create_celery_app, publishing_app
from visionq.queue.app import jobs_queue
from visionq.store import ImageIn, JobStore, create_engine_for, migrate
from visionq.store.tables import ImageRow, JobRow
from visionq.worker.runtime import Runtime
from visionq.worker.tasks import reconcile


@dataclass(frozen=True)
class ReconcileResult:
    jobs: int
    create_s: float
    healthy_ms: list[float]  # reconciliations of the healthy backlog (each publishes nothing)
    lost_periods_ms: list[float]  # one per reconciliation until every lost job was published again
    republished: int

    @property
    def recovery_s(self) -> float:
        """The longest a lost job waits to be published again: until it counts as lost, then until beat's
        next period, then the reconciliations that publish it (one per period)."""
        periods = (len(self.lost_periods_ms) - 1) * constants.RECOVER_INTERVAL_S
        last = self.lost_periods_ms[-1] / 1000
        return constants.REQUEUE_AFTER_S + constants.RECOVER_INTERVAL_S + periods + last


def run(
    settings: Settings, image: bytes, *, jobs: int, announce: Callable[[str], None] = lambda _: None
) -> ReconcileResult:
    """Measure on `settings`' database and broker, which must hold no job (a scratch database)."""
    engine = create_engine_for(settings.resolved_database_url)
    migrate(engine)
    made_at = datetime.now(UTC) - timedelta(seconds=2 * constants.REQUEUE_AFTER_S)
    store = JobStore(engine, clock=lambda: made_at)  # submitted long enough ago to count as lost
    publisher = JobPublisher(publishing_app(create_celery_app(settings)))
    if store.count_queued() or publisher.waiting():
        raise SystemExit("bench reconcile needs a scratch database and broker: this one holds jobs")
    runtime = Runtime(settings, store=JobStore(engine), models=ModelCache(settings.models_dir), threads=1)
    picture = ImageIn.of(image, content_type="image/jpeg", width=1, height=1)
    try:
        announce(f"making {jobs:,} queued jobs, a message each")
        started = time.perf_counter()
        for _ in range(jobs):
            job = store.create(image=picture, model=settings.model, params={})
            publisher.publish(job.id)
        create_s = time.perf_counter() - started

        healthy = [_timed(lambda: reconcile(runtime, publisher))[1] for _ in range(5)]
        announce("the broker loses every message")
        _purge(publisher)
        periods: list[float] = []
        republished = 0
        while republished < jobs:
            count, elapsed = _timed(lambda: reconcile(runtime, publisher))
            if count == 0:
                raise RuntimeError(f"reconciliation stopped at {republished} of {jobs} jobs")
            republished += count
            periods.append(elapsed)
        return ReconcileResult(jobs, create_s, healthy, periods, republished)
    finally:
        _purge(publisher)
        with engine.begin() as conn:
            conn.execute(delete(JobRow))
            conn.execute(delete(ImageRow))
        engine.dispose()
        publisher.app.close()


def _timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000


def _purge(publisher: JobPublisher) -> None:
    with publisher.app.connection_for_write() as conn:
        jobs_queue(publisher.app).bind(conn.default_channel).purge()


def summary(result: ReconcileResult) -> list[tuple[str, str]]:
    """The figures, as label and value."""
    lost = result.lost_periods_ms
    return [
        ("queued jobs", f"{result.jobs:,}"),
        (
            "made (job + message)",
            f"{result.create_s:.1f} s, {result.create_s / result.jobs * 1000:.2f} ms each",
        ),
        ("reconcile, healthy backlog", f"median {statistics.median(result.healthy_ms):.1f} ms (publishes 0)"),
        (
            "reconcile, every message lost",
            f"{result.republished:,} jobs published again by {len(lost)} reconciliation(s) "
            f"of {', '.join(f'{ms / 1000:.1f}' for ms in lost)} s",
        ),
        (
            "every lost job published again",
            f"at most {result.recovery_s:.0f} s after the loss (lost after {constants.REQUEUE_AFTER_S} s, "
            f"periods of {constants.RECOVER_INTERVAL_S} s)",
        ),
    ]
