"""/v1/detect: submit an image and wait for its result, for clients that would rather not poll.

The job is the same as POST /v1/jobs makes and a worker runs it; this endpoint waits for it the way
`visionq.api.waiters` describes: woken when the job changes (PostgreSQL NOTIFY, or the broker), never
by a loop of reads. It is `async`, so a waiting request holds no threadpool thread.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Form, Query, Response
from starlette.concurrency import run_in_threadpool

from visionq.api.deps import ServicesDep, SubmissionDep
from visionq.api.errors import error_responses
from visionq.api.routes.jobs import json_response, submit_headers
from visionq.api.submit import create_job
from visionq.views import JobOut

router = APIRouter(prefix="/v1", tags=["jobs"])

DEFAULT_TIMEOUT_S: Final = 10.0
# Beyond a minute a client is better served by polling the job than by holding a connection open.
MAX_TIMEOUT_S: Final = 60.0

_TIMEOUT_DOC = f"Seconds to wait for the result (default {DEFAULT_TIMEOUT_S:g}, at most {MAX_TIMEOUT_S:g})."


@router.post(
    "/detect",
    response_model=JobOut,
    responses={
        202: {"model": JobOut, "description": "Not finished in time; poll the job at `Location`."},
        **error_responses(400, 413, 415, 422, 503),
    },
)
async def detect(
    form: SubmissionDep,
    services: ServicesDep,
    timeout_form: Annotated[
        float | None, Form(alias="timeout", ge=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    ] = None,
    timeout_query: Annotated[
        float | None, Query(alias="timeout", ge=0, le=MAX_TIMEOUT_S, description=_TIMEOUT_DOC)
    ] = None,
) -> Response:
    """Detect objects in an image: 200 with the finished job, or 202 with the job if it takes too long."""
    timeout = next((t for t in (timeout_form, timeout_query) if t is not None), DEFAULT_TIMEOUT_S)
    waiter = services.waiters.expect()
    try:
        submitted = await run_in_threadpool(create_job, form, services, on_created=waiter.register)
        job = await services.waiters.wait(waiter, services.store, submitted.job, timeout)
    finally:
        waiter.close()
    headers = submit_headers(submitted)
    if job.status.terminal:
        headers.pop("Location")
        return json_response(JobOut.of(job), headers=headers)
    return json_response(JobOut.of(job), 202, headers=headers)
