"""/v1/jobs: submit an image, read a job and its annotated image, list, cancel and delete jobs.

Every endpoint is a plain `def`: FastAPI runs it in its threadpool, so database calls and image
decoding never block the event loop.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from visionq.api.deps import DecodeSlotsDep, PublisherDep, ServicesDep, SettingsDep, StoreDep, SubmissionDep
from visionq.api.errors import error_responses
from visionq.api.schemas import JobList
from visionq.api.submit import Submitted, create_job
from visionq.detect.annotate import annotate
from visionq.detect.image import decode_image
from visionq.detect.types import Detection
from visionq.errors import BrokerUnavailable, Conflict, NotFound
from visionq.queue import JobPublisher
from visionq.store import Job, JobStatus, JobStore
from visionq.views import JobOut

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# Pages are for people and dashboards; 100 jobs with their detections is already a large response.
MAX_PAGE = 100
DEFAULT_PAGE = 20

_UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 503)


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`model` as a JSON response, dumped once by pydantic's serializer (FastAPI would first validate
    the model it was handed again: a measurable share of a GET's CPU)."""
    return Response(
        model.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json"
    )


def job_location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def submit_headers(submitted: Submitted) -> dict[str, str]:
    """A submit's answer headers: the job's `Location`, and `Idempotent-Replayed` for a replay."""
    headers = {"Location": job_location(submitted.job.id)}
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


@router.post("", status_code=202, response_model=JobOut, responses=_UPLOAD_ERRORS)
def submit_job(form: SubmissionDep, services: ServicesDep) -> Response:
    """Queue an image for detection; poll the job at its `Location`."""
    submitted = create_job(form, services)
    return json_response(JobOut.of(submitted.job), 202, headers=submit_headers(submitted))


@router.get("", responses=error_responses(422, 503))
def list_jobs(
    store: StoreDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> JobList:
    """Jobs, newest first, a page at a time."""
    jobs, next_cursor = store.page(status=status, limit=limit, cursor=cursor)
    return JobList(jobs=[JobOut.of(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404, 503))
def get_job(job_id: str, store: StoreDep) -> Response:
    """A job: its status, and its detections once it has succeeded."""
    return json_response(JobOut.of(_job(store, job_id)))


@router.get(
    "/{job_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, **error_responses(404, 503)},
)
def get_image(job_id: str, store: StoreDep) -> Response:
    """The image the job was submitted with, as uploaded."""
    job = _job(store, job_id)
    data = store.image_data(job.image_sha256)
    if data is None:
        raise NotFound(f"the image of job {job.id} is gone")
    # Content-addressed: the bytes under a job never change, so a browser may keep them.
    headers = {"Cache-Control": "private, max-age=86400, immutable"}
    return Response(data, media_type=job.image_content_type, headers=headers)


@router.get(
    "/{job_id}/annotated",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **error_responses(404, 409, 503)},
)
def get_annotated(
    job_id: str, store: StoreDep, settings: SettingsDep, decode_slots: DecodeSlotsDep
) -> Response:
    """The job's image at full resolution with its detections drawn, as JPEG."""
    job = _job(store, job_id)
    if job.status is not JobStatus.SUCCEEDED:
        raise Conflict(f"job {job.id} is {job.status.value}; only a succeeded job has an annotated image")
    data = store.image_data(job.image_sha256)
    if data is None:
        raise NotFound(f"the image of job {job.id} is gone")
    # The image passed the limit when it was uploaded; a limit lowered since must not hide it now.
    max_pixels = max(settings.max_image_pixels, job.image_width * job.image_height)
    with decode_slots:
        decoded = decode_image(data, max_pixels=max_pixels)
        jpeg = annotate(decoded.image, [Detection.from_dict(d) for d in job.detections or []])
    return Response(jpeg, media_type="image/jpeg")


@router.delete(
    "/{job_id}",
    status_code=200,
    response_class=Response,
    responses={
        200: {"model": JobOut, "description": "The queued job was cancelled; it will not run."},
        204: {"description": "The finished job and its image were deleted."},
        **error_responses(404, 409, 503),
    },
)
def delete_job(job_id: str, store: StoreDep, publisher: PublisherDep) -> Response:
    """Cancel a queued job (200), or delete a finished one (204); a running job cannot be touched (409)."""
    cancelled = store.cancel(job_id)
    if cancelled is not None:
        if cancelled.callback_url is not None:
            _queue_webhook(publisher, cancelled.id)
        return json_response(JobOut.of(cancelled))
    if store.delete(job_id):
        return Response(status_code=204)
    # Neither queued nor finished: running, gone, or it finished between the two statements.
    job = _job(store, job_id)
    if job.status.terminal and store.delete(job_id):
        return Response(status_code=204)
    raise Conflict(f"job {job.id} is {job.status.value}; wait until it has finished to delete it")


def _queue_webhook(publisher: JobPublisher, job_id: str) -> None:
    """Send a cancelled job's webhook; the broker away, the reconciler sends it once it is overdue."""
    try:
        publisher.publish_webhook(job_id)
    except BrokerUnavailable as exc:
        logger.warning("job %s: webhook not published (%s); the reconciler will", job_id, exc)


def _job(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job
