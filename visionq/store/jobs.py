"""JobStore: every read and state change of a job, each in its own short transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    Update,
    bindparam,
    case,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from visionq.errors import ErrorCode, InvalidRequest
from visionq.store import images
from visionq.store.cursor import decode_cursor, encode_cursor
from visionq.store.db import BINARY_RESULTS, SQLITE_BEGIN, translate_errors
from visionq.store.status import TERMINAL_STATUSES, JobStatus
from visionq.store.tables import ImageRow, JobRow, UTCDateTime
from visionq.store.types import ImageIn, Job, canonical_job_id

# Jobs deleted per purge transaction: keeps each transaction's locks and WAL growth small while a big
# backlog is worked through; at most this many images' bytes are freed at once.
PURGE_BATCH = 500

# How often create() retries when an image it relied on was deleted by a concurrent delete/purge.
_CREATE_ATTEMPTS = 3

_TERMINAL = [s.value for s in TERMINAL_STATUSES]
_CLAIMABLE = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]


def utc_now() -> datetime:
    """The store's default clock."""
    return datetime.now(UTC)


_JOB_COLUMNS = (
    JobRow.id,
    JobRow.status,
    JobRow.model,
    JobRow.params,
    JobRow.image_sha256,
    ImageRow.content_type.label("image_content_type"),
    ImageRow.width.label("image_width"),
    ImageRow.height.label("image_height"),
    ImageRow.size_bytes.label("image_size_bytes"),
    JobRow.detections,
    JobRow.timings_ms,
    JobRow.error_code,
    JobRow.error_message,
    JobRow.attempts,
    JobRow.worker,
    JobRow.created_at,
    JobRow.started_at,
    JobRow.finished_at,
)


class JobStore:
    """The job table, the single source of truth for job state.

    Timestamps come from `clock` (the caller's machine, not the database server), always aware UTC.
    `started_at` is set on every delivery, so with `worker` and `attempts` it describes the latest attempt.
    Every method raises `DatabaseUnavailable` when the database cannot be used now, whatever the driver.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        # Reads are single statements: on PostgreSQL in autocommit (no COMMIT round trip), on SQLite in
        # a DEFERRED transaction (so readers never wait for the write lock).
        reads = (
            {"isolation_level": "AUTOCOMMIT"}
            if engine.dialect.name == "postgresql"
            else {SQLITE_BEGIN: "DEFERRED"}
        )
        self._reader = engine.execution_options(**reads)
        self._clock = clock

    @property
    def engine(self) -> Engine:
        """The engine the store runs on."""
        return self._engine

    @property
    def notifies(self) -> bool:
        """Whether the database announces status changes itself (PostgreSQL; visionq.store.events)."""
        return self._engine.dialect.name == "postgresql"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it takes the write lock up front), driver errors translated."""
        with translate_errors(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read: autocommit on PostgreSQL, a DEFERRED transaction on SQLite."""
        with translate_errors(), self._reader.begin() as conn:
            yield conn

    def create(self, *, image: ImageIn, model: str, params: dict[str, Any]) -> Job:
        """A new queued job on the image; the image is stored unless an upload already stored it."""
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    now = self._clock()
                    images.insert_if_absent(conn, image, now)
                    job = Job(
                        id=str(uuid.uuid4()),
                        status=JobStatus.QUEUED,
                        model=model,
                        params=params,
                        image_sha256=image.sha256,
                        # The same bytes (sha256) as a stored image: the same type and size.
                        image_content_type=image.content_type,
                        image_width=image.width,
                        image_height=image.height,
                        image_size_bytes=len(image.data),
                        detections=None,
                        timings_ms=None,
                        error_code=None,
                        error_message=None,
                        attempts=0,
                        worker=None,
                        created_at=now.astimezone(UTC),  # as it reads back
                        started_at=None,
                        finished_at=None,
                    )
                    conn.execute(
                        _INSERT_JOB,
                        {
                            "id": job.id,
                            "status": job.status.value,
                            "model": model,
                            "params": params,
                            "image_sha256": image.sha256,
                            "attempts": 0,
                            "created_at": now,
                        },
                    )
                    return job
            except IntegrityError:
                # The image was deleted (its last job purged) between our check and our insert.
                if attempt == _CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def get(self, job_id: str) -> Job | None:
        """The job, or None when there is none with that id (or the id is not a UUID)."""
        key = canonical_job_id(job_id)
        if key is None:
            return None
        with self._read() as conn:
            row = conn.execute(_GET_JOB, {"job_id": key}).one_or_none()
        return None if row is None else _to_job(row)

    def page(
        self, *, status: JobStatus | None = None, limit: int, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (None on the last one).

        Raises InvalidRequest for a malformed cursor or a limit below 1.
        """
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1, not {limit}")
        stmt = _select_jobs().order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit + 1)
        if status is not None:
            stmt = stmt.where(JobRow.status == JobStatus(status).value)
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            stmt = stmt.where(tuple_(JobRow.created_at, JobRow.id) < tuple_(created_at, last_id))
        with self._read() as conn:
            jobs = [_to_job(row) for row in conn.execute(stmt)]
        if len(jobs) <= limit:
            return jobs, None
        jobs = jobs[:limit]
        return jobs, encode_cursor(jobs[-1].created_at, jobs[-1].id)

    def claim(self, job_id: str, *, worker: str, delivery: bool = True) -> Job | None:
        """Mark the job running on `worker`; None when it is gone or finished.

        A running job is claimed again: that is a redelivery after a worker died mid-job. `delivery`
        says whether this counts as one more delivery (`attempts`): a task retrying itself after a
        database blip is the same delivery going on, not a worker that died. Claiming a queued job
        always counts one: when the blip came before the first claim, the retry is what delivers it.
        """
        claimed = self._claim(job_id, worker=worker, delivery=delivery, then=_GET_JOB)
        return None if claimed is None else _to_job(claimed)

    def claim_with_image(
        self, job_id: str, *, worker: str, delivery: bool = True
    ) -> tuple[Job, bytes] | None:
        """`claim`, and the bytes of the job's image read with the job: what a worker needs, in one
        statement fewer than `claim` and `image_data`."""
        claimed = self._claim(job_id, worker=worker, delivery=delivery, then=_GET_JOB_WITH_IMAGE)
        if claimed is None:
            return None
        values = dict(claimed._mapping)
        data: bytes = values.pop("image_data")
        return _job_of(values), data

    def _claim(self, job_id: str, *, worker: str, delivery: bool, then: Select[Any]) -> Row[Any] | None:
        key = canonical_job_id(job_id)
        if key is None:
            return None
        with self._write() as conn:
            claimed = conn.execute(
                _CLAIM,
                {"job_id": key, "redelivery": 1 if delivery else 0, "now": self._clock(), "worker": worker},
            ).scalar_one_or_none()
            # The inner join always finds the image: a job's image is deleted only with its last job.
            return None if claimed is None else conn.execute(then, {"job_id": key}).one()

    def succeed(self, job_id: str, *, detections: list[dict[str, Any]], timings_ms: dict[str, float]) -> bool:
        """Record the result of a running job; False (nothing written) when it is no longer running."""
        return self._finish(job_id, _SUCCEED, {"detections": detections, "timings_ms": timings_ms})

    def fail(
        self, job_id: str, *, code: ErrorCode, message: str, timings_ms: dict[str, float] | None = None
    ) -> bool:
        """Record the failure of a running job; False (nothing written) when it is no longer running."""
        values: dict[str, Any] = {"error_code": code, "error_message": message}
        if timings_ms is not None:
            values["timings_ms"] = timings_ms
        return self._finish(job_id, _finish_running(JobStatus.FAILED).values(**values), {})

    def _finish(self, job_id: str, statement: Update, params: dict[str, Any]) -> bool:
        """Run `statement` (a `_finish_running` update) on the job; whether it was still running."""
        key = canonical_job_id(job_id)
        if key is None:
            return False
        with self._write() as conn:
            return conn.execute(statement, {"job_id": key, "now": self._clock(), **params}).rowcount == 1

    def requeue_stalled(self, *, started_before: datetime, limit: int = PURGE_BATCH) -> list[str]:
        """Put jobs a worker took but never finished back to queued; returns their ids to re-publish.

        A running job started before the cutoff (older than the task time limit) has no worker on it
        any more: its worker died and the broker lost the message (kombu's filesystem transport does
        on a hard kill). A queued job with a start time was requeued by an earlier call whose publish
        never happened. `started_at` becomes the requeue time, so each
        stalled job is handed back once per period, not on every call.
        """
        stalled = (JobRow.started_at < started_before) & (
            (JobRow.status == JobStatus.RUNNING.value)
            | ((JobRow.status == JobStatus.QUEUED.value) & JobRow.started_at.is_not(None))
        )
        with self._write() as conn:
            ids = conn.execute(select(JobRow.id).where(stalled).order_by(JobRow.started_at).limit(limit))
            candidates = [row[0] for row in ids]
            if not candidates:
                return []
            requeued = conn.execute(
                update(JobRow)
                .where(JobRow.id.in_(candidates), stalled)
                .values(status=JobStatus.QUEUED.value, started_at=self._clock())
                .returning(JobRow.id)
            )
            return [row[0] for row in requeued]

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job and return it; None when it is missing or no longer queued."""
        key = canonical_job_id(job_id)
        if key is None:
            return None
        with self._write() as conn:
            cancelled = conn.execute(
                update(JobRow)
                .where(JobRow.id == key, JobRow.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.CANCELLED.value, finished_at=self._clock())
                .returning(JobRow.id)
            ).scalar_one_or_none()
            return None if cancelled is None else _fetch(conn, key)

    def delete(self, job_id: str) -> bool:
        """Delete a finished (terminal) job, and its image unless another job uses it; False otherwise."""
        return self._delete(job_id, only_terminal=True)

    def discard(self, job_id: str) -> bool:
        """Delete a job whatever its state (the broker refused its message), and its image if orphaned."""
        return self._delete(job_id, only_terminal=False)

    def _delete(self, job_id: str, *, only_terminal: bool) -> bool:
        key = canonical_job_id(job_id)
        if key is None:
            return False
        stmt = delete(JobRow).where(JobRow.id == key)
        if only_terminal:
            stmt = stmt.where(JobRow.status.in_(_TERMINAL))
        with self._write() as conn:
            sha = conn.execute(select(JobRow.image_sha256).where(JobRow.id == key)).scalar_one_or_none()
            if sha is None:
                return False
            images.lock(conn, [sha])
            if conn.execute(stmt.returning(JobRow.id)).scalar_one_or_none() is None:
                return False
            images.delete_orphans(conn, [sha])
            return True

    def image_data(self, sha256: str) -> bytes | None:
        """The bytes of a stored image, or None."""
        with self._read() as conn:
            data: bytes | None = conn.execute(_IMAGE_DATA, {"sha256": sha256}).scalar_one_or_none()
        return data

    def purge(self, *, finished_before: datetime, batch_size: int = PURGE_BATCH) -> int:
        """Delete terminal jobs finished before the cutoff and the images left unused; the jobs deleted.

        Works in transactions of `batch_size` jobs, so a big backlog never holds locks for long.
        """
        if finished_before.utcoffset() is None:
            raise ValueError("finished_before must be timezone-aware")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        expired = (JobRow.finished_at < finished_before) & JobRow.status.in_(_TERMINAL)
        batch = select(JobRow.id, JobRow.image_sha256).where(expired).order_by(JobRow.finished_at)
        total = 0
        while True:
            with self._write() as conn:
                rows = conn.execute(batch.limit(batch_size)).all()
                shas = {row.image_sha256 for row in rows}
                images.lock(conn, shas)
                deleted = conn.execute(
                    delete(JobRow).where(JobRow.id.in_([row.id for row in rows]), expired)
                ).rowcount
                images.delete_orphans(conn, shas)
            total += deleted
            if len(rows) < batch_size:
                return total

    def ping(self) -> None:
        """Round-trip to the database; its error propagates when it is unreachable."""
        with translate_errors(), self._reader.connect() as conn:
            conn.execute(select(1))


def _select_jobs() -> Select[Any]:
    return select(*_JOB_COLUMNS).join(ImageRow, ImageRow.sha256 == JobRow.image_sha256)


# The hot statements, built once: composing a statement and its cache key on every call cost more
# API CPU than running it (a GET went from 0.93 to 0.69 ms).
_INSERT_JOB = insert(JobRow)
_GET_JOB = _select_jobs().where(JobRow.id == bindparam("job_id"))
# Image bytes come back in PostgreSQL's binary format (visionq.store.db.BINARY_RESULTS).
_BINARY = {BINARY_RESULTS: True}
_GET_JOB_WITH_IMAGE = _GET_JOB.add_columns(ImageRow.data.label("image_data")).execution_options(**_BINARY)
_IMAGE_DATA = select(ImageRow.data).where(ImageRow.sha256 == bindparam("sha256")).execution_options(**_BINARY)


def _finish_running(status: JobStatus) -> Update:
    """Moves the running job `job_id` to `status`, finished at `now`; nothing when it is not running."""
    return (
        update(JobRow)
        .where(JobRow.id == bindparam("job_id"), JobRow.status == JobStatus.RUNNING.value)
        .values(status=status.value, finished_at=bindparam("now", type_=UTCDateTime()))
    )


_SUCCEED = _finish_running(JobStatus.SUCCEEDED).values(
    detections=bindparam("detections", type_=JobRow.detections.type),
    timings_ms=bindparam("timings_ms", type_=JobRow.timings_ms.type),
)
# A queued job's claim is always a new delivery; a running one's only when `redelivery` says so.
_CLAIM = (
    update(JobRow)
    .where(JobRow.id == bindparam("job_id"), JobRow.status.in_(_CLAIMABLE))
    .values(
        status=JobStatus.RUNNING.value,
        attempts=JobRow.attempts
        + case((JobRow.status == JobStatus.QUEUED.value, 1), else_=bindparam("redelivery")),
        started_at=bindparam("now", type_=UTCDateTime()),
        worker=bindparam("worker"),
    )
    .returning(JobRow.id)
)


def _to_job(row: Row[Any]) -> Job:
    return _job_of(dict(row._mapping))


def _job_of(values: dict[str, Any]) -> Job:
    values["status"] = JobStatus(values["status"])
    return Job(**values)


def _fetch(conn: Connection, job_id: str) -> Job:
    return _to_job(conn.execute(_GET_JOB, {"job_id": job_id}).one())
