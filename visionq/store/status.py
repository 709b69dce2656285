"""A job's lifecycle, shared by the store, the API and the worker."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is: queued → running → succeeded | failed; a queued job can be cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change: it has its one result or was cancelled."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class WebhookStatus(StrEnum):
    """A job's webhook: pending until the receiver took it (delivered) or the last try failed (failed)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
