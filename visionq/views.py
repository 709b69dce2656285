"""A job as the outside world sees it: the JSON the API answers and webhooks deliver.

Pydantic models built from the store's plain values, never from ORM rows; shared by the API (which
answers them) and the worker (which POSTs a finished job to its callback URL).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from visionq import constants
from visionq.errors import ErrorCode
from visionq.store import Job, JobStatus, WebhookStatus


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="Stable and machine-readable, e.g. `unsupported_format`.")
    message: str = Field(description="For people.")


class ErrorOut(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody


class ImageOut(BaseModel):
    width: int = Field(description="As the user sees it (EXIF orientation applied).")
    height: int
    sha256: str
    content_type: str = Field(description="Of the format found in the bytes, not the one the client named.")
    size_bytes: int


class BoxOut(BaseModel):
    """Corners in pixels of the full-resolution image."""

    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    label: str
    class_id: int
    confidence: float
    box: BoxOut


class ParamsOut(BaseModel):
    """The detection parameters the job runs with."""

    conf: float = constants.DEFAULT_CONFIDENCE
    iou: float = constants.DEFAULT_IOU
    classes: list[str] | None = Field(default=None, description="Only these classes; null: all.")
    max_det: int = constants.DEFAULT_MAX_DETECTIONS


class TimingsOut(BaseModel):
    """Milliseconds spent in each stage; a stage the worker did not report is null."""

    queue_wait: float | None = None
    decode: float | None = None
    preprocess: float | None = None
    inference: float | None = None
    postprocess: float | None = None
    total: float | None = None


class WebhookOut(BaseModel):
    """The job's callback: where it goes, and how its delivery went so far."""

    url: str
    status: WebhookStatus = Field(
        description="pending until the receiver answered 2xx, or the last try failed."
    )
    attempts: int = Field(description="Tries so far.")
    last_error: str | None = Field(description="What the latest failed try got instead of a 2xx.")
    last_attempt_at: datetime | None


class JobOut(BaseModel):
    id: str
    status: JobStatus
    model: str
    params: ParamsOut
    image: ImageOut
    detections: list[DetectionOut] | None = Field(description="null until the job has succeeded.")
    error: ErrorBody | None = Field(description="Why the job failed; null otherwise.")
    attempts: int = Field(description="Deliveries to a worker so far.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings_ms: TimingsOut | None
    webhook: WebhookOut | None = Field(default=None, description="null without a callback_url.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        error = None
        if job.error_code is not None:
            error = ErrorBody(code=ErrorCode(job.error_code), message=job.error_message or "")
        return cls(
            id=job.id,
            status=job.status,
            model=job.model,
            params=ParamsOut.model_validate(job.params),
            image=ImageOut(
                width=job.image_width,
                height=job.image_height,
                sha256=job.image_sha256,
                content_type=job.image_content_type,
                size_bytes=job.image_size_bytes,
            ),
            detections=(
                None if job.detections is None else [DetectionOut.model_validate(d) for d in job.detections]
            ),
            error=error,
            attempts=job.attempts,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            timings_ms=None if job.timings_ms is None else TimingsOut.model_validate(job.timings_ms),
            webhook=_webhook(job),
        )


def _webhook(job: Job) -> WebhookOut | None:
    if job.callback_url is None or job.webhook_status is None:
        return None
    return WebhookOut(
        url=job.callback_url,
        status=job.webhook_status,
        attempts=job.webhook_attempts,
        last_error=job.webhook_error,
        last_attempt_at=job.webhook_at,
    )
