"""GET /v1/jobs/{id}/events: a job's status changes as Server-Sent Events, until it has finished.

The first event is the job as it is now, so a client that connects late misses nothing; then one event
per change, pushed the way `visionq.api.waiters` describes (PostgreSQL NOTIFY, or the broker's fanout),
and the stream ends after the event of a finished job. While it waits, a stream holds an asyncio event
and nothing else: no threadpool thread, no database connection. A client that goes away is noticed by
Starlette (the ASGI disconnect), and its waiter is dropped then. FastAPI's own SSE support frames the
events and sends a keep-alive comment every 15 s, which keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from visionq.api.deps import ServicesDep
from visionq.api.errors import error_responses
from visionq.api.waiters import Waiter
from visionq.errors import ErrorCode, NotFound
from visionq.store import Job
from visionq.views import ErrorBody, ErrorOut, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# How often a waiting stream reads its job even though nothing woke it: the bound on what a lost
# wake-up could cost. 200 idle streams cost 200 reads a minute, nothing next to the jobs themselves.
RECHECK_S: Final = 60.0

_JOB_EVENT: Final = "job"
_ERROR_EVENT: Final = "error"


@dataclass(frozen=True, slots=True)
class Watch:
    """A stream's waiter, registered before its job was read, and the job as read then."""

    waiter: Waiter
    job: Job


async def watch_job(job_id: str, services: ServicesDep) -> AsyncIterator[Watch]:
    """Register a waiter for the job, then read it (404 before the stream starts when there is none).

    A dependency with `yield`, so the waiter is dropped however the stream ends: finished, the client
    gone, or the server shutting down.
    """
    waiter = services.waiters.expect()
    waiter.register(job_id)
    try:
        job = await run_in_threadpool(services.store.get, job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        yield Watch(waiter, job)
    finally:
        waiter.close()


WatchDep = Annotated[Watch, Depends(watch_job)]


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`event: job` with the job's JSON (`JobOut`) as `data`: first the job as it "
            "is, then at each status change; the stream ends after a finished job (succeeded, failed, "
            "cancelled). `event: error` with an `ErrorOut` when the job is deleted meanwhile.",
        },
        **error_responses(404, 503),
    },
)
async def job_events(watch: WatchDep, services: ServicesDep) -> AsyncIterator[ServerSentEvent]:
    """Follow a job live: its status changes as Server-Sent Events, until it has finished."""
    yield _job_event(watch.job)
    try:
        async for job in services.waiters.follow(watch.waiter, services.store, watch.job, RECHECK_S):
            yield _job_event(job)
    except NotFound as exc:
        error = ErrorOut(error=ErrorBody(code=ErrorCode.NOT_FOUND, message=str(exc)))
        yield ServerSentEvent(event=_ERROR_EVENT, raw_data=error.model_dump_json())


def _job_event(job: Job) -> ServerSentEvent:
    return ServerSentEvent(event=_JOB_EVENT, raw_data=JobOut.of(job).model_dump_json())
