"""The webhook columns of the job table: each try of a finished job's webhook, and the overdue ones.

A job with a callback URL has its webhook pending from its submit on. Each try is recorded in one
UPDATE that only a pending webhook takes, so a second delivery of the same task (at-least-once) finds it
delivered and sends nothing more. Overdue ones (`overdue`) are those whose message was lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update

from visionq.store.db import translate_errors
from visionq.store.jobs import utc_now
from visionq.store.status import TERMINAL_STATUSES, WebhookStatus
from visionq.store.tables import JobRow
from visionq.store.types import canonical_job_id

_TERMINAL = [s.value for s in TERMINAL_STATUSES]
_PENDING = (JobRow.webhook_status == WebhookStatus.PENDING.value) & JobRow.status.in_(_TERMINAL)


class WebhookStore:
    """The webhook side of the job table, on the job store's engine; the clock as JobStore's."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def delivered(self, job_id: str) -> bool:
        """Record a try the receiver took; False when the webhook was no longer pending."""
        return self._record(job_id, status=WebhookStatus.DELIVERED, error=None, next_at=None)

    def retry(self, job_id: str, *, error: str, after_s: float) -> bool:
        """Record a failed try, the next due in `after_s` seconds; False when no longer pending."""
        next_at = self._clock() + timedelta(seconds=after_s)
        return self._record(job_id, status=WebhookStatus.PENDING, error=error, next_at=next_at)

    def give_up(self, job_id: str, *, error: str) -> bool:
        """Record the last failed try: the webhook is failed for good; False when no longer pending."""
        return self._record(job_id, status=WebhookStatus.FAILED, error=error, next_at=None)

    def overdue(self, *, late_by_s: float, limit: int) -> list[str]:
        """Finished jobs whose pending webhook's next try (or, before any try, the job's end) is more
        than `late_by_s` seconds past: their message was lost. Each is marked due now, so it comes back
        once per `late_by_s` while it stays lost."""
        now = self._clock()
        due = func.coalesce(JobRow.webhook_next_at, JobRow.finished_at)
        with translate_errors(), self._engine.begin() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    select(JobRow.id).where(_PENDING, due < now - timedelta(seconds=late_by_s)).limit(limit)
                )
            ]
            if ids:
                conn.execute(update(JobRow).where(JobRow.id.in_(ids), _PENDING).values(webhook_next_at=now))
        return ids

    def _record(
        self, job_id: str, *, status: WebhookStatus, error: str | None, next_at: datetime | None
    ) -> bool:
        key = canonical_job_id(job_id)
        if key is None:
            return False
        statement = (
            update(JobRow)
            .where(JobRow.id == key, _PENDING)
            .values(
                webhook_status=status.value,
                webhook_attempts=JobRow.webhook_attempts + 1,
                webhook_error=error,
                webhook_at=self._clock(),
                webhook_next_at=next_at,
            )
        )
        with translate_errors(), self._engine.begin() as conn:
            return conn.execute(statement).rowcount == 1
