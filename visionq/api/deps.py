"""Every FastAPI dependency, named once: the infrastructure create_app was given, and the upload form."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from visionq import constants
from visionq.api.submit import Submission, submission_form
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.store import JobStore
from visionq.worker.publish import JobPublisher


@dataclass(frozen=True, slots=True)
class Services:
    """What create_app was built over; kept on `app.state.services`."""

    settings: Settings
    store: JobStore
    publisher: JobPublisher
    models: ModelCache
    # Bounds the API's full-size image decodes in flight (see constants.API_DECODE_SLOTS).
    decode_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(constants.API_DECODE_SLOTS)
    )


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
