"""From a multipart upload to a queued job: validate everything, store the job, publish its id.

Shared by POST /v1/jobs and POST /v1/detect. Nothing is stored until the image's header and every
parameter are valid, and a job whose message the broker refused is discarded again. The pixels are
decoded once, by the worker: the API reads only the header (format, size, the pixel limit) and checks
that the file is not cut off where the format lets that be told cheaply (`probe_image`); damage inside
the compressed data fails the job with the code `corrupt`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import UploadFile

from visionq.api.deps import Services, Submission
from visionq.config import Settings
from visionq.detect.image import probe_image
from visionq.detect.manifest import Manifest
from visionq.errors import ErrorCode, InvalidImage, InvalidRequest, ModelNotFound
from visionq.models.cache import ModelCache
from visionq.store import ImageIn, Job, JobStore
from visionq.webhooks import check_callback_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    """What a submit did: `job`, made now, or made by an earlier request with its Idempotency-Key."""

    job: Job
    replayed: bool = False


def create_job(
    form: Submission, services: Services, *, on_created: Callable[[str], None] | None = None
) -> Submitted:
    """Validate the upload, store it as a queued job and publish the job's id; blocking (DB, broker).

    `on_created` is called with the job's id between storing and publishing it: a waiter registered
    there cannot miss the job's end. With an Idempotency-Key already used for the same request, the job
    that request made is returned, published by it, not again (`replayed`).
    """
    settings, store = services.settings, services.store
    name = (form.model or "").strip() or settings.model
    manifest = _manifest(services.models, name)
    classes = _classes(form.classes, manifest)
    data = _read_image(form.image, settings.max_image_bytes)
    info = probe_image(data, max_pixels=settings.max_image_pixels)
    image = ImageIn.of(data, content_type=info.content_type, width=info.width, height=info.height)
    params = {"conf": form.conf, "iou": form.iou, "classes": classes, "max_det": form.max_det}
    callback_url = _callback_url(form.callback_url, settings)
    # Before the job is made: a retry of an accepted request meeting a full queue is told to come back,
    # and then finds its job.
    services.bounds.admit(form.client)
    if form.idempotency_key is None:
        job = store.create(
            image=image, model=name, params=params, client=form.client, callback_url=callback_url
        )
    else:
        job, made = store.create_once(
            key=form.idempotency_key,
            fingerprint=_fingerprint(image.sha256, name, params, callback_url),
            image=image,
            model=name,
            params=params,
            client=form.client,
            callback_url=callback_url,
        )
        if not made:
            if on_created is not None:
                on_created(job.id)
                job = store.get(job.id) or job  # read after the waiter is there: no end goes unseen
            logger.info("job %s returned again for its Idempotency-Key", job.id, extra={"job_id": job.id})
            return Submitted(job, replayed=True)
    try:
        if on_created is not None:
            on_created(job.id)
        services.publisher.publish(job.id)
    except Exception:
        # No message means no worker will ever run it: a job left queued would wait forever.
        _discard(store, job.id)
        raise
    services.bounds.queued(form.client)
    services.metrics.submitted(name)
    logger.info(
        "job %s queued: %s, %s %dx%d, %d bytes",
        job.id,
        name,
        info.content_type,
        info.width,
        info.height,
        len(data),
        extra={"job_id": job.id},
    )
    return Submitted(job)


def _fingerprint(image_sha256: str, model: str, params: dict[str, Any], callback_url: str | None) -> str:
    """What a request asks, as a sha256: its image, model, parameters and callback (a canonical JSON)."""
    asked: dict[str, Any] = {"image": image_sha256, "model": model, "params": params}
    if callback_url is not None:  # left out without one: the fingerprints of earlier jobs stay valid
        asked["callback_url"] = callback_url
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _callback_url(url: str | None, settings: Settings) -> str | None:
    """The callback URL when it may be called back (visionq.webhooks.address); refused with 422
    `invalid_callback_url` otherwise, and when the server has no secret to sign webhooks with."""
    if url is None:
        return None
    if settings.webhook_secret is None:
        raise InvalidRequest(
            "callback_url refused: this server sends no webhooks (VISIONQ_WEBHOOK_SECRET is not set)",
            code=ErrorCode.INVALID_CALLBACK_URL,
        )
    check_callback_url(url, allow_private=settings.webhook_allow_private)
    return url


def _manifest(models: ModelCache, name: str) -> Manifest:
    try:
        manifest, _ = models.get(name)
    except (ModelNotFound, InvalidRequest) as exc:  # InvalidRequest: not even a valid model name
        known = ", ".join(m.name for m in models.list()) or "none"
        raise InvalidRequest(
            f"unknown model {name!r}; available: {known}", code=ErrorCode.UNKNOWN_MODEL
        ) from exc
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
        raise InvalidImage(
            f"The image is larger than the limit of {limit:,} bytes.", code=ErrorCode.TOO_LARGE
        )
    return data


def _discard(store: JobStore, job_id: str) -> None:
    try:
        store.discard(job_id)
    except Exception:
        logger.exception(
            "could not discard job %s after its message was refused", job_id, extra={"job_id": job_id}
        )
