"""From a multipart upload to a queued job: validate everything, store the job, publish its id.

Shared by POST /v1/jobs and POST /v1/detect. Nothing is stored until the image has decoded and every
parameter is valid, and a job whose message the broker refused is discarded again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Final

from fastapi import File, Form, UploadFile

from visionq import constants
from visionq.detect.image import decode_image
from visionq.errors import InvalidImage, InvalidRequest, ModelNotFound
from visionq.models.cache import ModelCache
from visionq.models.manifest import Manifest
from visionq.store import ImageIn, Job, JobStore

if TYPE_CHECKING:  # deps imports this module for the upload form
    from visionq.api.deps import Services

logger = logging.getLogger(__name__)

# More boxes than this in one answer is a threshold mistake, not a scene; it also bounds a job row.
MAX_DETECTIONS_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class Submission:
    """The form of an upload, field by field, as FastAPI validated it."""

    image: UploadFile
    conf: float
    iou: float
    classes: str | None
    model: str | None
    max_det: int


async def submission_form(
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF.")],
    conf: Annotated[
        float, Form(ge=0, le=1, description="Minimum confidence.")
    ] = constants.DEFAULT_CONFIDENCE,
    iou: Annotated[float, Form(ge=0, le=1, description="NMS overlap threshold.")] = constants.DEFAULT_IOU,
    classes: Annotated[str | None, Form(description="Comma-separated class names to keep.")] = None,
    model: Annotated[str | None, Form(description="A model of GET /v1/models.")] = None,
    max_det: Annotated[
        int, Form(ge=1, le=MAX_DETECTIONS_LIMIT, description="Most detections kept.")
    ] = constants.DEFAULT_MAX_DETECTIONS,
) -> Submission:
    """The upload form, as a dependency both upload routes share (async: it only gathers the fields)."""
    return Submission(image=image, conf=conf, iou=iou, classes=classes, model=model, max_det=max_det)


def create_job(form: Submission, services: Services) -> Job:
    """Validate the upload, store it as a queued job and publish the job's id; blocking (DB, decode)."""
    settings, store = services.settings, services.store
    name = (form.model or "").strip() or settings.model
    manifest = _manifest(services.models, name)
    classes = _classes(form.classes, manifest)
    data = _read_image(form.image, settings.max_image_bytes)
    # Decoded in full, so a truncated or corrupt image is refused now, not failed later by a worker.
    with services.decode_slots:
        decoded = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            # The size the detector decodes at: a large JPEG is checked at down to 1/8 scale, as it will run.
            min_size=(manifest.input.width, manifest.input.height),
        )
    image = ImageIn.of(data, content_type=decoded.content_type, width=decoded.width, height=decoded.height)
    params = {"conf": form.conf, "iou": form.iou, "classes": classes, "max_det": form.max_det}
    job = store.create(image=image, model=name, params=params)
    try:
        services.publisher.publish(job.id)
    except Exception:
        # No message means no worker will ever run it: a job left queued would wait forever.
        _discard(store, job.id)
        raise
    return job


def _manifest(models: ModelCache, name: str) -> Manifest:
    try:
        manifest, _ = models.get(name)
    except (ModelNotFound, InvalidRequest) as exc:  # InvalidRequest: not even a valid model name
        known = ", ".join(m.name for m in models.list()) or "none"
        raise InvalidRequest(f"unknown model {name!r}; available: {known}", code="unknown_model") from exc
    return manifest


def _classes(names: str | None, manifest: Manifest) -> list[str] | None:
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    if not wanted:
        return None
    manifest.class_ids(wanted)
    return list(dict.fromkeys(wanted))


def _read_image(upload: UploadFile, limit: int) -> bytes:
    upload.file.seek(0)
    data = upload.file.read(limit + 1)  # one byte more than allowed tells "too large" from "exactly full"
    if len(data) > limit:
        raise InvalidImage(f"The image is larger than the limit of {limit:,} bytes.", code="too_large")
    return data


def _discard(store: JobStore, job_id: str) -> None:
    try:
        store.discard(job_id)
    except Exception:
        logger.exception("could not discard job %s after its message was refused", job_id)
