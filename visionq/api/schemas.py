"""What the API answers: pydantic models built from the store's plain values, never from ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from visionq import constants
from visionq.detect.manifest import Family, Manifest, Preprocess
from visionq.errors import ErrorCode
from visionq.store import Job, JobStatus


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
        )


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class InputOut(BaseModel):
    width: int
    height: int
    preprocess: Preprocess


class ModelOut(BaseModel):
    name: str
    family: Family
    input: InputOut
    classes: list[str]
    source: str
    license: str | None

    @classmethod
    def of(cls, manifest: Manifest) -> ModelOut:
        spec = manifest.input
        return cls(
            name=manifest.name,
            family=manifest.family,
            input=InputOut(width=spec.width, height=spec.height, preprocess=spec.preprocess),
            classes=list(manifest.classes),
            source=manifest.source,
            license=manifest.license,
        )


class ModelList(BaseModel):
    models: list[ModelOut]
    default: str = Field(description="The model a job runs with when it names none.")


class StatusOut(BaseModel):
    status: Literal["ok"] = "ok"
