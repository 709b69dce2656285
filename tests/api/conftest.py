"""API fixtures: the app over real infrastructure, embedded (SQLite + filesystem broker) or RabbitMQ +
PostgreSQL, with the real model; and the worker's own `run_job` to finish jobs in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from celery import Celery
from fastapi import FastAPI
from fastapi.testclient import TestClient as TestClient
from sqlalchemy import Engine, delete

from visionq import constants
from visionq.api.app import create_app
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.queue import JobPublisher, create_celery_app
from visionq.store import Job, JobStatus, JobStore, create_engine_for, migrate
from visionq.store.tables import ImageRow, JobRow
from visionq.system import available_cores
from visionq.worker.runtime import Runtime
from visionq.worker.tasks import announce_status, run_job

# Port 1 on the loopback: nothing listens there, so connecting fails at once (a real outage, no fake).
DEAD_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
DEAD_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/visionq"

EMBEDDED = "embedded"
SERVICES = "services"
BACKENDS = [EMBEDDED, pytest.param(SERVICES, marks=[pytest.mark.rabbitmq, pytest.mark.postgres])]


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_vhosts: Callable[[], str]) -> str:
    """A RabbitMQ vhost of the session's own: the jobs published here reach no other test's workers."""
    return rabbitmq_vhosts()


class Response(Protocol):
    """What the tests read of a TestClient response (httpx's or httpx2's, whichever Starlette uses)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


@dataclass
class Stack:
    """One API over its own infrastructure, handles on that infrastructure for checking it, and a worker
    runtime over the same store and models (its detector is loaded on the first job it runs)."""

    settings: Settings
    engine: Engine
    store: JobStore
    celery: Celery
    publisher: JobPublisher
    client: TestClient
    runtime: Runtime


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache
) -> Iterator[StackFactory]:
    """create(backend, **settings): an API over fresh infrastructure; all of it is closed afterwards."""
    made: list[tuple[Stack, str]] = []

    def create(backend: str = EMBEDDED, **overrides: Any) -> Stack:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"data-{len(made)}",
            "database_url": None,
            "broker_url": None,
            "model": constants.DEFAULT_MODEL,
        }
        if backend == SERVICES:
            values["database_url"] = request.getfixturevalue("migrated_postgres_url")
            values["broker_url"] = request.getfixturevalue("rabbitmq_url")
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings option
        engine = create_engine_for(settings.resolved_database_url)
        if backend == EMBEDDED and settings.database_url is None:
            migrate(engine)
        store = JobStore(engine)
        celery = create_celery_app(settings)
        publisher = JobPublisher(celery)
        app = create_app(settings, store=store, publisher=publisher, models=model_cache)
        runtime = Runtime(settings, store=store, models=model_cache, threads=available_cores())
        stack = Stack(settings, engine, store, celery, publisher, TestClient(app), runtime)
        made.append((stack, backend))
        return stack

    yield create
    for stack, backend in made:
        stack.client.close()
        app = stack.client.app
        assert isinstance(app, FastAPI)
        app.state.services.waiters.close()  # the lifespan, which would, runs only under `with client`
        if backend == SERVICES:
            _empty(stack.engine)  # the session's database is shared by the tests that follow
        stack.engine.dispose()
        stack.celery.close()


def _empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(JobRow))
        conn.execute(delete(ImageRow))


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest, make_stack: StackFactory) -> Stack:
    """The API over embedded infrastructure, then over RabbitMQ and PostgreSQL."""
    backend: str = request.param
    return make_stack(backend)


@pytest.fixture
def client(stack: Stack) -> TestClient:
    return stack.client


def upload(
    client: TestClient, data: bytes, *, path: str = "/v1/jobs", filename: str = "image.jpg", **form: Any
) -> Response:
    """POST an image as the `image` field of a multipart form, with the other fields as form fields."""
    fields = {k: str(v) for k, v in form.items()}
    response: Response = client.post(
        path, files={"image": (filename, data, "application/octet-stream")}, data=fields
    )
    return response


def assert_error(response: Response, status: int, code: str) -> dict[str, str]:
    """The response is an ErrorOut with this status and code; returns its error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


def complete(stack: Stack, job_id: str) -> Job:
    """Run a queued job to success in-process with the worker's own `run_job`, announcing its claim and
    its outcome as the worker's task does (the push on a database that cannot push itself)."""

    def claimed(job: Job) -> None:
        announce_status(stack.celery, stack.runtime, job.id, JobStatus.RUNNING)

    status = run_job(stack.runtime, job_id, worker="api-tests", on_claimed=claimed)
    announce_status(stack.celery, stack.runtime, job_id, status)
    job = stack.store.get(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED, job
    return job
