"""The job store: images and jobs in PostgreSQL or SQLite, the single source of truth for job state."""

from __future__ import annotations

from visionq.store.db import create_engine_for, migrate, migrate_database
from visionq.store.jobs import JobStore
from visionq.store.status import TERMINAL_STATUSES, JobStatus, WebhookStatus
from visionq.store.types import ImageIn, Job

__all__ = [
    "TERMINAL_STATUSES",
    "ImageIn",
    "Job",
    "JobStatus",
    "JobStore",
    "WebhookStatus",
    "create_engine_for",
    "migrate",
    "migrate_database",
]
