"""/v1/detect: submit an image and wait for its result, for clients that would rather not poll.

The job is the same as POST /v1/jobs makes and a worker runs it; this endpoint only polls the job
table for the client. It is `async` so that a waiting request holds no threadpool thread: each
database read runs in the threadpool, the waits are `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Final

from fastapi import APIRouter, Form, Query, Response
from starlette.concurrency import run_in_threadpool

from visionq.api.deps import ServicesDep, SubmissionDep
from visionq.api.errors import error_responses
from visionq.api.routes.jobs import job_location
from visionq.api.schemas import JobOut
from visionq.api.submit import create_job
from visionq.errors import NotFound
from visionq.store import Job, JobStore

router = APIRouter(prefix="/v1", tags=["jobs"])

# A detection takes tens of milliseconds on an idle worker: the first looks come quickly, then back
# off so a slow queue costs a few reads a second per waiting client, not fifty.
FIRST_POLL_S: Final = 0.02
MAX_POLL_S: Final = 0.25
POLL_BACKOFF: Final = 1.5

DEFAULT_TIMEOUT_S: Final = 10.0
# Beyond a minute a client is better served by polling the job than by holding a connection open.
MAX_TIMEOUT_S: Final = 60.0

_TIMEOUT_DOC = f"Seconds to wait for the result (default {DEFAULT_TIMEOUT_S:g}, at most {MAX_TIMEOUT_S:g})."


@router.post(
    "/detect",
    responses={
        202: {"model": JobOut, "description": "Not finished in time; poll the job at `Location`."},
        **error_responses(400, 413, 415, 422, 503),
    },
)
async def detect(
    form: SubmissionDep,
    services: ServicesDep,
    response: Response,
    timeout_form: Annotated[
        float | None, Form(alias="timeout", ge=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    ] = None,
    timeout_query: Annotated[
        float | None, Query(alias="timeout", ge=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    ] = None,
) -> JobOut:
    """Detect objects in an image: 200 with the finished job, or 202 with the job if it takes too long."""
    timeout = next((t for t in (timeout_form, timeout_query) if t is not None), DEFAULT_TIMEOUT_S)
    job = await run_in_threadpool(create_job, form, services)
    job = await _wait(services.store, job, timeout)
    if not job.status.terminal:
        response.status_code = 202
        response.headers["Location"] = job_location(job.id)
    return JobOut.of(job)


async def _wait(store: JobStore, job: Job, timeout: float) -> Job:
    """The job once it is finished, or as it is when `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL_S
    while not job.status.terminal:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(delay, left))
        delay = min(delay * POLL_BACKOFF, MAX_POLL_S)
        latest = await run_in_threadpool(store.get, job.id)
        if latest is None:
            raise NotFound(f"job {job.id} was deleted while waiting for it")
        job = latest
    return job
