"""JobStore: every read and state change of a job, each in its own short transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Row,
    Select,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from visionq.errors import Conflict, ErrorCode, InvalidRequest
from visionq.store import images
from visionq.store.cursor import decode_cursor, encode_cursor
from visionq.store.db import BINARY_RESULTS, SQLITE_BEGIN, translate_errors
from visionq.store.status import TERMINAL_STATUSES, JobStatus, WebhookStatus
from visionq.store.tables import ImageRow, JobRow, UTCDateTime
from visionq.store.types import ImageIn, Job, canonical_job_id

# Jobs deleted per purge transaction: keeps each transaction's locks and WAL growth small while a big
# backlog is worked through; at most this many images' bytes are freed at once.
PURGE_BATCH = 500

# How often create() retries when an image it relied on was deleted by a concurrent delete/purge.
_CREATE_ATTEMPTS = 3

_TERMINAL = [s.value for s in TERMINAL_STATUSES]


class _KeyTaken(Exception):
    """Another request's job holds the Idempotency-Key this insert was for."""


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
    JobRow.callback_url,
    JobRow.webhook_status,
    JobRow.webhook_attempts,
    JobRow.webhook_error,
    JobRow.webhook_at,
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

    def create(
        self,
        *,
        image: ImageIn,
        model: str,
        params: dict[str, Any],
        client: str | None = None,
        callback_url: str | None = None,
    ) -> Job:
        """A new queued job on the image; the image is stored unless an upload already stored it.

        `client` names who submitted it (an API key's name), for the per-key bound on queued jobs;
        `callback_url` where the finished job is POSTed (its webhook is pending from now on).
        """
        return self._create(image, model, params, client, None, callback_url)

    def create_once(
        self,
        *,
        key: str,
        fingerprint: str,
        image: ImageIn,
        model: str,
        params: dict[str, Any],
        client: str | None = None,
        callback_url: str | None = None,
    ) -> tuple[Job, bool]:
        """The job submitted with Idempotency-Key `key`: made now (True), or the one made before (False).

        `fingerprint` says what was asked (the image, the model, the parameters). A key already used
        for another request raises Conflict (`idempotency_key_reused`). Of two requests racing with one
        key, one makes the job and the other gets it. Keys are the client's own: two clients may use
        the same key without meeting.
        """
        stored = key if client is None else f"{client}/{key}"
        found = self._by_key(stored, fingerprint, shown=key)
        if found is not None:
            return found, False
        try:
            return self._create(image, model, params, client, (stored, fingerprint), callback_url), True
        except _KeyTaken:
            found = self._by_key(stored, fingerprint, shown=key)
            if found is None:  # made and deleted again in between: only a client deleting it can
                raise Conflict(
                    f"the job of Idempotency-Key {key!r} was deleted meanwhile; send the request again",
                    code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
                ) from None
            return found, False

    def _by_key(self, key: str, fingerprint: str, *, shown: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(_GET_JOB_BY_KEY, {"key": key}).one_or_none()
        if row is None:
            return None
        values = dict(row._mapping)
        if values.pop("request_fingerprint") != fingerprint:
            raise Conflict(
                f"Idempotency-Key {shown!r} was used for another request "
                "(another image, model or parameters)",
                code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
            )
        return _job_of(values)

    def _create(
        self,
        image: ImageIn,
        model: str,
        params: dict[str, Any],
        client: str | None,
        idempotency: tuple[str, str] | None,
        callback_url: str | None,
    ) -> Job:
        key, fingerprint = idempotency or (None, None)
        webhook = None if callback_url is None else WebhookStatus.PENDING
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
                        callback_url=callback_url,
                        webhook_status=webhook,
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
                            "idempotency_key": key,
                            "request_fingerprint": fingerprint,
                            "client": client,
                            "callback_url": callback_url,
                            "webhook_status": webhook,
                        },
                    )
                    return job
            except IntegrityError:
                if key is not None and self._key_taken(key):
                    raise _KeyTaken() from None
                # The image was deleted (its last job purged) between our check and our insert.
                if attempt == _CREATE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _key_taken(self, key: str) -> bool:
        with self._read() as conn:
            return conn.execute(select(JobRow.id).where(JobRow.idempotency_key == key)).first() is not None

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

    def claim(
        self,
        job_id: str,
        *,
        worker: str,
        delivery: bool = True,
        running_since_before: datetime | None = None,
    ) -> Job | None:
        """Mark the job running on `worker`; None when it is gone, finished, or held by a live claim.

        A running job is claimed again when its worker died mid-job: when `running_since_before` is
        None (the caller knows: a broker's redelivery, or its own retry), or when the job has been
        running since before it (its claim outlived the time limit, so no worker is on it any more).
        A running job claimed more recently is left to its worker: that is a second message for the
        same job (a reconciler's re-publish), and running it too would run it twice.

        `delivery` says whether this counts as one more delivery (`attempts`): a task retrying itself
        after a database blip is the same delivery going on, not a worker that died. Claiming a queued
        job always counts one: when the blip came before the first claim, the retry is what delivers it.
        """
        claimed = self._claim(job_id, worker, delivery, running_since_before, then=_GET_JOB)
        return None if claimed is None else _to_job(claimed)

    def claim_with_image(
        self,
        job_id: str,
        *,
        worker: str,
        delivery: bool = True,
        running_since_before: datetime | None = None,
    ) -> tuple[Job, bytes] | None:
        """`claim`, and the bytes of the job's image read with the job: what a worker needs, in one
        statement fewer than `claim` and `image_data`."""
        claimed = self._claim(job_id, worker, delivery, running_since_before, then=_GET_JOB_WITH_IMAGE)
        if claimed is None:
            return None
        values = dict(claimed._mapping)
        data: bytes = values.pop("image_data")
        return _job_of(values), data

    def _claim(
        self,
        job_id: str,
        worker: str,
        delivery: bool,
        running_since_before: datetime | None,
        *,
        then: Select[Any],
    ) -> Row[Any] | None:
        key = canonical_job_id(job_id)
        if key is None:
            return None
        with self._write() as conn:
            claimed = conn.execute(
                _CLAIM,
                {
                    "job_id": key,
                    "redelivery": 1 if delivery else 0,
                    "now": self._clock(),
                    "worker": worker,
                    "take_over": running_since_before is None,
                    "running_since_before": running_since_before,
                },
            ).scalar_one_or_none()
            # The inner join always finds the image: a job's image is deleted only with its last job.
            return None if claimed is None else conn.execute(then, {"job_id": key}).one()

    def succeed(
        self,
        job_id: str,
        *,
        detections: list[dict[str, Any]],
        timings_ms: dict[str, float],
        attempt: int | None = None,
    ) -> bool:
        """Record the result of a running job; False (nothing written) when it is no longer running, or,
        given the `attempt` that claimed it, when another claim took it over since (see `_finish`)."""
        params = {"detections": detections, "timings_ms": timings_ms}
        return self._finish(job_id, _SUCCEED, params, attempt)

    def fail(
        self,
        job_id: str,
        *,
        code: ErrorCode,
        message: str,
        timings_ms: dict[str, float] | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Record the failure of a running job; False (nothing written) as for `succeed`."""
        values: dict[str, Any] = {"error_code": code, "error_message": message}
        if timings_ms is not None:
            values["timings_ms"] = timings_ms
        return self._finish(job_id, _finish_running(JobStatus.FAILED).values(**values), {}, attempt)

    def _finish(self, job_id: str, statement: Update, params: dict[str, Any], attempt: int | None) -> bool:
        """Run `statement` (a `_finish_running` update) on the job; whether it was still running.

        With `attempt`, only while the job's claim is still that one: a worker cut off by a partition,
        whose job another worker took over (attempts + 1) and is running, must not write its late
        result over the live claim. The live claim's worker stores the one result.
        """
        key = canonical_job_id(job_id)
        if key is None:
            return False
        if attempt is not None:
            statement = statement.where(JobRow.attempts == bindparam("attempt"))
            params = {**params, "attempt": attempt}
        with self._write() as conn:
            return conn.execute(statement, {"job_id": key, "now": self._clock(), **params}).rowcount == 1

    def count_queued(self) -> int:
        """How many jobs are queued (an index-only count)."""
        with self._read() as conn:
            return int(conn.execute(_COUNT_QUEUED).scalar_one())

    def queued_by_client(self) -> dict[str | None, int]:
        """How many jobs each client has queued (None: jobs submitted without an API key)."""
        with self._read() as conn:
            return {client: int(n) for client, n in conn.execute(_QUEUED_BY_CLIENT)}

    def count_unfinished(self) -> dict[str, int]:
        """Jobs queued and running, by status ("queued", "running"): one grouped count on the status index."""
        counts = dict.fromkeys((JobStatus.QUEUED.value, JobStatus.RUNNING.value), 0)
        with self._read() as conn:
            counts.update({str(status): int(n) for status, n in conn.execute(_COUNT_UNFINISHED)})
        return counts

    def requeue_lost(
        self,
        *,
        running_before: datetime,
        queued_before: datetime,
        queued: int,
        limit: int = PURGE_BATCH,
    ) -> list[str]:
        """Put back to queued, and return to be published again, the jobs whose message is presumed lost.

        - Running since before `running_before`: a claim older than the time limit has no worker on it
          any more. Its worker died, and the broker had no message to redeliver (kombu's filesystem
          transport loses a killed worker's; a Redis restart loses them all).
        - Of the jobs queued and last published before `queued_before`, the `queued` oldest: the caller
          knows how many messages the broker is short of (queued jobs against messages waiting). The
          oldest are the ones whose messages would have been delivered first.

        `started_at` of a job handed back becomes the time it is published again, so each comes back
        once per period: a publish that never happens (the broker is down) is retried the next.
        """
        running = (JobRow.status == JobStatus.RUNNING.value) & (JobRow.started_at < running_before)
        last_published = func.coalesce(JobRow.started_at, JobRow.created_at)
        waiting = (JobRow.status == JobStatus.QUEUED.value) & (last_published < queued_before)
        with self._write() as conn:
            candidates = [row[0] for row in conn.execute(select(JobRow.id).where(running).limit(limit))]
            if queued > 0:
                oldest = select(JobRow.id).where(waiting).order_by(JobRow.created_at, JobRow.id)
                candidates += [row[0] for row in conn.execute(oldest.limit(min(queued, limit)))]
            if not candidates:
                return []
            requeued = conn.execute(
                update(JobRow)
                .where(JobRow.id.in_(candidates), running | waiting)
                .values(status=JobStatus.QUEUED.value, started_at=self._clock())
                .returning(JobRow.id)
            )
            found = {row[0] for row in requeued}
        return [job_id for job_id in candidates if job_id in found]

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
_COUNT_QUEUED = select(func.count()).select_from(JobRow).where(JobRow.status == JobStatus.QUEUED.value)
_QUEUED_BY_CLIENT = (
    select(JobRow.client, func.count()).where(JobRow.status == JobStatus.QUEUED.value).group_by(JobRow.client)
)
_COUNT_UNFINISHED = (
    select(JobRow.status, func.count())
    .where(JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
    .group_by(JobRow.status)
)
_GET_JOB = _select_jobs().where(JobRow.id == bindparam("job_id"))
# Image bytes come back in PostgreSQL's binary format (visionq.store.db.BINARY_RESULTS).
_BINARY = {BINARY_RESULTS: True}
_GET_JOB_BY_KEY = (
    _select_jobs().add_columns(JobRow.request_fingerprint).where(JobRow.idempotency_key == bindparam("key"))
)
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
# A queued job's claim is always a new delivery; a running one's only when `redelivery` says so. A
# running job is taken over only when `take_over` says its worker died, or its claim is older than
# `running_since_before` (see JobStore.claim).
_CLAIM = (
    update(JobRow)
    .where(
        JobRow.id == bindparam("job_id"),
        (JobRow.status == JobStatus.QUEUED.value)
        | (
            (JobRow.status == JobStatus.RUNNING.value)
            & (
                bindparam("take_over", type_=Boolean())
                | (JobRow.started_at < bindparam("running_since_before", type_=UTCDateTime()))
            )
        ),
    )
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
    if values["webhook_status"] is not None:
        values["webhook_status"] = WebhookStatus(values["webhook_status"])
    return Job(**values)


def _fetch(conn: Connection, job_id: str) -> Job:
    return _to_job(conn.execute(_GET_JOB, {"job_id": job_id}).one())
