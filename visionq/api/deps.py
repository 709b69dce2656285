"""Every FastAPI dependency, named once: the infrastructure create_app was given, and the upload form."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Final

from fastapi import Depends, File, Form, Header, Request, UploadFile

from visionq import constants
from visionq.api.quotas import QueueBounds
from visionq.api.waiters import JobWaiters
from visionq.config import Settings
from visionq.errors import ErrorCode, InvalidRequest
from visionq.models.cache import ModelCache
from visionq.observe.metrics import ApiMetrics
from visionq.queue import JobPublisher
from visionq.store import JobStore


@dataclass(frozen=True, slots=True)
class Services:
    """What create_app was built over; kept on `app.state.services`."""

    settings: Settings
    store: JobStore
    publisher: JobPublisher
    models: ModelCache
    waiters: JobWaiters
    bounds: QueueBounds
    # Bounds the API's full-size image decodes in flight: annotated images (constants.API_DECODE_SLOTS).
    decode_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(constants.API_DECODE_SLOTS)
    )
    metrics: ApiMetrics = field(default_factory=ApiMetrics)


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
    idempotency_key: str | None = None
    client: str | None = None  # the API key's name (access.AccessGuard), None without API keys
    callback_url: str | None = None


async def require_multipart(request: Request) -> None:
    """Refuse, with 415, an upload whose body is not a multipart form (FastAPI would say 422 `image`
    missing: true, but not what is wrong). A sub-dependency of the form, so it runs before the fields."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise InvalidRequest(
            f"Send the image as multipart/form-data, in the field `image`; the body is "
            f"{media_type or 'of no media type'}.",
            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )


async def submission_form(
    request: Request,
    _multipart: Annotated[None, Depends(require_multipart)],
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
    callback_url: Annotated[
        str | None,
        Form(
            max_length=constants.MAX_CALLBACK_URL_LENGTH,
            description="An http(s) URL the finished job is POSTed to, signed (README, Webhooks). It "
            "must resolve to public addresses unless the server allows private ones.",
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Sent again with the same request, returns the job the first one made (no second "
            "job); with another request, 409 `idempotency_key_reused`. 1-255 printable ASCII characters.",
        ),
    ] = None,
) -> Submission:
    """The upload form, as a dependency both upload routes share (async: it only gathers the fields)."""
    return Submission(
        image=image,
        conf=conf,
        iou=iou,
        classes=classes,
        model=model,
        max_det=max_det,
        idempotency_key=idempotency_key,
        client=get_client(request),
        callback_url=callback_url.strip() or None if callback_url is not None else None,
    )


def get_client(request: Request) -> str | None:
    """Who sent the request: the name of its API key, None when the API takes no keys."""
    client = getattr(request.state, "client", None)
    return client if isinstance(client, str) else None


# `async def`: none of these block, and FastAPI would run a plain `def` dependency in its threadpool.
async def get_services(request: Request) -> Services:
    return _services(request)


def _services(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


async def get_settings(request: Request) -> Settings:
    return _services(request).settings


async def get_store(request: Request) -> JobStore:
    return _services(request).store


async def get_publisher(request: Request) -> JobPublisher:
    return _services(request).publisher


async def get_models(request: Request) -> ModelCache:
    return _services(request).models


async def get_decode_slots(request: Request) -> threading.BoundedSemaphore:
    return _services(request).decode_slots


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
PublisherDep = Annotated[JobPublisher, Depends(get_publisher)]
ModelsDep = Annotated[ModelCache, Depends(get_models)]
DecodeSlotsDep = Annotated[threading.BoundedSemaphore, Depends(get_decode_slots)]
SubmissionDep = Annotated[Submission, Depends(submission_form)]
