"""What the store takes and gives: plain frozen values, never ORM rows or sessions."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from visionq.store.status import JobStatus, WebhookStatus


@dataclass(frozen=True, slots=True)
class ImageIn:
    """An uploaded image to store with a job; `sha256` is the hex digest of `data`."""

    sha256: str
    content_type: str
    width: int
    height: int
    data: bytes

    @classmethod
    def of(cls, data: bytes, *, content_type: str, width: int, height: int) -> ImageIn:
        """An ImageIn with its sha256 computed from `data`."""
        return cls(hashlib.sha256(data).hexdigest(), content_type, width, height, data)


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored, with its image's metadata (never its bytes: see `JobStore.image_data`)."""

    id: str
    status: JobStatus
    model: str
    params: dict[str, Any]
    image_sha256: str
    image_content_type: str
    image_width: int
    image_height: int
    image_size_bytes: int
    detections: list[dict[str, Any]] | None
    timings_ms: dict[str, float] | None
    error_code: str | None
    error_message: str | None
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # The webhook (migration 0006): where the finished job goes, and how that went (none: no callback).
    callback_url: str | None = None
    webhook_status: WebhookStatus | None = None
    webhook_attempts: int = 0
    webhook_error: str | None = None
    webhook_at: datetime | None = None


def canonical_job_id(job_id: str) -> str | None:
    """The canonical (lower-case, hyphenated) form of a job id, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        return None
