"""The FastAPI application: `create_app` over given infrastructure, `create_default_app` for `visionq api`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from visionq import __version__
from visionq.api.access import AccessGuard, ApiKeys, RequestLimits, documented_access
from visionq.api.deps import Services
from visionq.api.errors import install_error_handlers
from visionq.api.limits import FORM_OVERHEAD_BYTES, BodyLimit
from visionq.api.quotas import QueueBounds
from visionq.api.routes import detect, health, jobs, page
from visionq.api.routes import events as events_routes
from visionq.api.routes import metrics as metrics_routes
from visionq.api.routes import models as models_routes
from visionq.api.waiters import JobEvents, JobWaiters
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.queue import JobPublisher, create_celery_app, publishing_app
from visionq.queue.events import BrokerJobEvents
from visionq.store import JobStore, create_engine_for, migrate
from visionq.store.events import PostgresJobEvents

_DESCRIPTION = """
Upload an image to `POST /v1/jobs`; a worker runs YOLO on it and the job (`GET /v1/jobs/{id}`)
gets its detections. `POST /v1/detect` does both and waits. Every error answers
`{"error": {"code", "message"}}`; a 503 carries `Retry-After`.
"""


def create_app(
    settings: Settings,
    *,
    store: JobStore,
    publisher: JobPublisher,
    models: ModelCache,
    events: JobEvents | None = None,
) -> FastAPI:
    """The API over the given job store, broker publisher and model cache (kept on `app.state`).

    `events` tells waiting requests that a job changed; by default PostgreSQL's LISTEN/NOTIFY when the
    store is on PostgreSQL, else the announcements workers publish on the broker.
    """
    if events is None:
        events = PostgresJobEvents(store.engine.url) if store.notifies else BrokerJobEvents(publisher.app)
    waiters = JobWaiters(events)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        waiters.close()

    app = FastAPI(
        title="visionq", version=__version__, description=_DESCRIPTION, docs_url="/docs", lifespan=lifespan
    )
    keys, limits = ApiKeys.from_settings(settings), RequestLimits.from_settings(settings)
    bounds = QueueBounds(store, total=settings.max_queued_jobs, per_client=settings.max_queued_jobs_per_key)
    app.state.services = Services(
        settings=settings, store=store, publisher=publisher, models=models, waiters=waiters, bounds=bounds
    )
    app.state.services.metrics.count_jobs(store.count_unfinished)  # the queue depths, at each scrape
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_image_bytes + FORM_OVERHEAD_BYTES,
        detail=f"Images may be at most {settings.max_image_bytes:,} bytes.",
    )
    if keys is not None or limits is not None:
        # Added last, so it runs first: a request without a key is refused before its body is counted.
        app.add_middleware(AccessGuard, keys=keys, limits=limits, metrics_public=settings.metrics_public)
    for module in (jobs, events_routes, detect, models_routes):
        app.include_router(module.router, **documented_access(keys, limits))
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(page.router)
    return app


def create_default_app() -> FastAPI:
    """The app `visionq api` serves (a uvicorn factory): everything built from `Settings()`.

    Migrates the database first, so the API never answers over an outdated schema; every process may
    do it at once (see `migrate`).
    """
    settings = Settings()
    engine = create_engine_for(settings.resolved_database_url)
    migrate(engine)
    publisher = JobPublisher(publishing_app(create_celery_app(settings)))
    return create_app(
        settings, store=JobStore(engine), publisher=publisher, models=ModelCache(settings.models_dir)
    )
