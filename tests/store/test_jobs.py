"""JobStore on SQLite and PostgreSQL: lifecycle, exactly-once results, pagination and clean-up."""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from psycopg.pq import Format
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.store.conftest import FakeClock
from visionq.errors import Conflict, DatabaseUnavailable, ErrorCode, InvalidRequest
from visionq.store.db import create_engine_for, migrate_database
from visionq.store.jobs import JobStore
from visionq.store.status import JobStatus
from visionq.store.tables import ImageRow
from visionq.store.types import ImageIn, Job

BINARY = Format.BINARY
PARAMS = {"conf": 0.25, "iou": 0.45, "classes": None, "max_det": 300}


def make_image(content: bytes = b"\x89PNG fake image") -> ImageIn:
    return ImageIn.of(content, content_type="image/png", width=640, height=480)


def make_job(store: JobStore, image: ImageIn | None = None) -> Job:
    return store.create(image=image or make_image(), model="yolov4-tiny", params=PARAMS)


def image_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ImageRow)).scalar_one()


def finished(store: JobStore, status: JobStatus) -> Job:
    """A job that reached `status` the way the worker or the API gets it there."""
    job = make_job(store)
    if status is JobStatus.CANCELLED:
        assert store.cancel(job.id) is not None
    else:
        assert store.claim(job.id, worker="w1") is not None
        if status is JobStatus.SUCCEEDED:
            assert store.succeed(job.id, detections=[], timings_ms={})
        else:
            assert store.fail(job.id, code=ErrorCode.CORRUPT, message="truncated")
    got = store.get(job.id)
    assert got is not None
    return got


def test_a_created_job_is_queued_and_reads_back_with_its_image_metadata(store: JobStore) -> None:
    image = make_image()
    job = make_job(store, image)

    assert job.status is JobStatus.QUEUED
    assert uuid.UUID(job.id).version == 4
    assert (job.model, job.params, job.attempts, job.worker) == ("yolov4-tiny", PARAMS, 0, None)
    assert (job.image_sha256, job.image_content_type, job.image_width, job.image_height) == (
        image.sha256,
        "image/png",
        640,
        480,
    )
    assert job.image_size_bytes == len(image.data)
    assert job.detections is None and job.timings_ms is None and job.error_code is None
    assert job.started_at is None and job.finished_at is None
    assert store.get(job.id) == job
    assert store.get(job.id.upper()) == job
    assert store.image_data(image.sha256) == image.data


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid", ""])
def test_get_of_an_unknown_or_malformed_id_returns_none(store: JobStore, job_id: str) -> None:
    assert store.get(job_id) is None


def test_the_same_image_uploaded_twice_is_stored_once(store: JobStore, engine: Engine) -> None:
    first, second = make_job(store), make_job(store)

    assert first.id != second.id and first.image_sha256 == second.image_sha256
    assert image_count(engine) == 1


def test_racing_uploads_of_the_same_new_image_all_succeed(store: JobStore, engine: Engine) -> None:
    barrier = threading.Barrier(6)

    def upload(_: int) -> Job:
        barrier.wait()
        return make_job(store, make_image(b"same new image"))

    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(upload, range(6)))

    assert len({job.id for job in jobs}) == 6
    assert image_count(engine) == 1


def test_creating_and_deleting_jobs_on_one_image_at_once_never_fails_nor_leaks(
    store: JobStore, engine: Engine
) -> None:
    # On PostgreSQL a delete can remove the image between a create's existence check and its insert,
    # and a create can reference it while a delete removes it; both must be absorbed.
    image = make_image(b"contended")

    def churn(_: int) -> None:
        for _ in range(40):
            job = make_job(store, image)
            assert store.cancel(job.id) is not None
            assert store.delete(job.id)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(churn, range(4)))

    assert image_count(engine) == 0
    assert store.page(limit=1) == ([], None)


@pytest.mark.parametrize("first_by", ["delete", "purge"])
def test_removing_the_last_two_jobs_of_an_image_at_once_deletes_the_image(
    store: JobStore, engine: Engine, first_by: str
) -> None:
    # Write skew under READ COMMITTED: each remover, seeing the other's job still there, would keep
    # the image, and it would be left with no job at all.
    image = make_image(b"last two")
    barrier = threading.Barrier(2)

    def remove(job: Job, by: str) -> None:
        barrier.wait()
        if by == "delete":
            assert store.delete(job.id)
        else:
            assert job.finished_at is not None
            assert store.purge(finished_before=job.finished_at + timedelta(microseconds=1)) == 1

    for _ in range(25):
        first, second = (store.cancel(make_job(store, image).id) for _ in range(2))
        assert first is not None and second is not None
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(remove, [first, second], [first_by, "delete"]))
        assert store.page(limit=1) == ([], None)
        assert image_count(engine) == 0


@pytest.mark.parametrize("tick", [timedelta(milliseconds=1), timedelta(0)], ids=["distinct", "same-time"])
def test_list_pages_newest_first_without_gaps_or_repeats(
    store: JobStore, clock: FakeClock, tick: timedelta
) -> None:
    clock.step = tick
    created = [make_job(store) for _ in range(7)]
    expected = sorted(created, key=lambda j: (j.created_at, j.id), reverse=True)

    pages: list[list[Job]] = []
    cursor: str | None = None
    while True:
        page, cursor = store.page(limit=3, cursor=cursor)
        pages.append(page)
        if cursor is None:
            break

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job.id for page in pages for job in page] == [job.id for job in expected]


def test_a_full_last_page_has_no_next_cursor(store: JobStore) -> None:
    for _ in range(2):
        make_job(store)

    page, cursor = store.page(limit=2)

    assert len(page) == 2 and cursor is None


def test_list_filters_by_status(store: JobStore) -> None:
    queued = make_job(store)
    running = make_job(store)
    store.claim(running.id, worker="w1")

    assert [j.id for j in store.page(status=JobStatus.QUEUED, limit=10)[0]] == [queued.id]
    assert [j.id for j in store.page(status=JobStatus.RUNNING, limit=10)[0]] == [running.id]
    assert store.page(status=JobStatus.FAILED, limit=10) == ([], None)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        _b64("no separator"),
        _b64(f"yesterday|{uuid.uuid4()}"),
        _b64("2025-01-01T00:00:00+00:00|not-a-uuid"),
        _b64(f"2025-01-01T00:00:00|{uuid.uuid4()}"),  # naive
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_malformed_cursor_is_an_invalid_request(store: JobStore, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="cursor"):
        store.page(limit=10, cursor=cursor)


def test_a_limit_below_one_is_an_invalid_request(store: JobStore) -> None:
    with pytest.raises(InvalidRequest, match="limit"):
        store.page(limit=0)


def test_claim_moves_a_queued_job_to_running_on_that_worker(store: JobStore) -> None:
    job = make_job(store)

    claimed = store.claim(job.id, worker="host-a")

    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.worker) == (JobStatus.RUNNING, 1, "host-a")
    assert claimed.started_at is not None and claimed.started_at > job.created_at
    assert store.get(job.id) == claimed


def test_a_redelivered_running_job_is_claimed_again_with_one_more_attempt(store: JobStore) -> None:
    job = make_job(store)
    first = store.claim(job.id, worker="host-a")

    again = store.claim(job.id, worker="host-b")

    assert first is not None and again is not None and first.started_at is not None
    assert (again.status, again.attempts, again.worker) == (JobStatus.RUNNING, 2, "host-b")
    assert again.started_at is not None and again.started_at > first.started_at


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_claim_of_a_finished_job_returns_none_and_changes_nothing(store: JobStore, status: JobStatus) -> None:
    job = finished(store, status)

    assert store.claim(job.id, worker="late") is None
    assert store.get(job.id) == job


def test_claim_of_a_missing_job_returns_none(store: JobStore) -> None:
    assert store.claim(str(uuid.uuid4()), worker="w") is None
    assert store.claim("nonsense", worker="w") is None
    assert store.claim_with_image(str(uuid.uuid4()), worker="w") is None


def test_a_claim_with_its_image_is_the_claim_plus_the_image_s_bytes(store: JobStore) -> None:
    image = make_image(b"\x89PNG the worker's bytes")
    job = store.create(image=image, model="yolov4-tiny", params={})

    claimed = store.claim_with_image(job.id, worker="host-a")

    assert claimed is not None
    running, data = claimed
    assert data == image.data
    assert (running.status, running.attempts, running.worker) == (JobStatus.RUNNING, 1, "host-a")
    assert store.get(job.id) == running
    assert store.succeed(job.id, detections=[], timings_ms={})
    assert store.claim_with_image(job.id, worker="late") is None  # finished: nothing to run


@pytest.mark.postgres
def test_on_postgresql_image_bytes_are_stored_uncompressed_and_read_back_in_binary(
    migrated_postgres_url: str,
) -> None:
    store = JobStore(create_engine_for(migrated_postgres_url))
    data = b"\x89PNG" + bytes(300_000)  # compressible: the default storage would pglz it
    job = store.create(image=make_image(data), model="yolov4-tiny", params=PARAMS)
    formats: list[set[int]] = []

    def record(_conn: object, cursor: Any, statement: str, *_args: object) -> None:
        if "images.data" in statement:  # a read of image bytes: which format each column came in
            formats.append({cursor.pgresult.fformat(i) for i in range(cursor.pgresult.nfields)})

    event.listen(store.engine, "after_cursor_execute", record)
    try:
        claimed = store.claim_with_image(job.id, worker="w")
        read = store.image_data(job.image_sha256)
    finally:
        event.remove(store.engine, "after_cursor_execute", record)

    assert claimed is not None and claimed[1] == data and read == data
    assert claimed[0] == store.get(job.id)  # the job's columns load the same in either format
    assert formats == [{BINARY}, {BINARY}]
    with store.engine.connect() as conn:
        compression, size = conn.execute(
            text("SELECT pg_column_compression(data), pg_column_size(data) FROM images WHERE sha256 = :sha"),
            {"sha": job.image_sha256},
        ).one()
    store.engine.dispose()
    assert (compression, size) == (None, len(data))


def test_a_running_job_is_left_to_its_live_claim_and_taken_over_once_that_claim_expired(
    store: JobStore, clock: FakeClock
) -> None:
    job = make_job(store)
    first = store.claim(job.id, worker="a")
    assert first is not None and first.started_at is not None
    lease_start = first.started_at

    # A second message for the job (a reconciler's re-publish) while its claim is live: left alone.
    assert store.claim(job.id, worker="b", running_since_before=lease_start - timedelta(seconds=1)) is None
    assert store.get(job.id) == first
    # Once the claim is older than the cutoff, no worker is on it any more: taken over, one more delivery.
    clock.advance(timedelta(minutes=10))
    taken = store.claim(job.id, worker="b", running_since_before=clock.now - timedelta(minutes=5))
    assert taken is not None and (taken.worker, taken.attempts) == ("b", 2)
    # A broker's redelivery (no cutoff) takes it over at once.
    again = store.claim(job.id, worker="c")
    assert again is not None and (again.worker, again.attempts) == ("c", 3)
    # A queued job is claimed whatever the cutoff.
    other = make_job(store)
    assert store.claim(other.id, worker="d", running_since_before=clock.now - timedelta(days=1)) is not None


def test_a_claim_taken_over_keeps_the_result_from_the_late_first_worker(store: JobStore) -> None:
    job = make_job(store)
    first = store.claim(job.id, worker="cut-off")
    assert first is not None
    second = store.claim(job.id, worker="live")  # a redelivery: the first worker seemed gone
    assert second is not None and second.attempts == first.attempts + 1

    # The first worker, back from its partition, finishes while the second still runs the job.
    assert not store.succeed(job.id, detections=[{"late": True}], timings_ms={}, attempt=first.attempts)
    assert not store.fail(job.id, code=ErrorCode.TIMEOUT, message="late", attempt=first.attempts)
    assert store.get(job.id) == second  # still running, under the live claim
    assert store.succeed(job.id, detections=[], timings_ms={"total": 1.0}, attempt=second.attempts)
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.detections == []
    assert not store.succeed(job.id, detections=[], timings_ms={}, attempt=second.attempts)  # once


def test_a_second_submit_with_an_idempotency_key_gets_the_first_job_and_makes_none(store: JobStore) -> None:
    image = make_image(b"\x89PNG idempotent")
    first, made = store.create_once(
        key="k-1", fingerprint="f", image=image, model="yolov4-tiny", params=PARAMS
    )
    again, made_again = store.create_once(
        key="k-1", fingerprint="f", image=image, model="yolov4-tiny", params=PARAMS
    )

    assert (made, made_again) == (True, False)
    assert again == first
    assert store.count_queued() == 1
    other, made_other = store.create_once(
        key="k-2", fingerprint="f", image=image, model="yolov4-tiny", params=PARAMS
    )
    assert made_other and other.id != first.id


def test_an_idempotency_key_used_for_another_request_is_a_conflict(store: JobStore) -> None:
    image = make_image(b"\x89PNG first request")
    store.create_once(key="k", fingerprint="first", image=image, model="yolov4-tiny", params=PARAMS)

    with pytest.raises(Conflict) as refused:
        store.create_once(key="k", fingerprint="second", image=image, model="yolov4-tiny", params=PARAMS)
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert store.count_queued() == 1


def test_of_many_racing_submits_with_one_idempotency_key_one_makes_the_job_and_all_get_it(
    store: JobStore,
) -> None:
    image = make_image(b"\x89PNG raced")
    racers = 8
    barrier = threading.Barrier(racers)

    def submit(_: int) -> tuple[Job, bool]:
        barrier.wait()
        return store.create_once(key="race", fingerprint="f", image=image, model="yolov4-tiny", params=PARAMS)

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(submit, range(racers)))

    assert [made for _, made in results].count(True) == 1
    assert len({job.id for job, _ in results}) == 1
    assert store.count_queued() == 1


def test_of_many_racing_claims_exactly_one_is_the_first_delivery(store: JobStore) -> None:
    job = make_job(store)
    workers = 8
    barrier = threading.Barrier(workers)

    def claim(n: int) -> Job | None:
        barrier.wait()
        return store.claim(job.id, worker=f"w{n}")

    with ThreadPoolExecutor(workers) as pool:
        claims = list(pool.map(claim, range(workers)))

    attempts = sorted(c.attempts for c in claims if c is not None)
    assert attempts == list(range(1, workers + 1))
    final = store.get(job.id)
    assert final is not None and final.attempts == workers


def test_a_result_is_recorded_once_and_a_second_succeed_changes_nothing(store: JobStore) -> None:
    job = make_job(store)
    store.claim(job.id, worker="w1")
    detections = [
        {"label": "dog", "class_id": 16, "confidence": 0.9, "box": {"x1": 1.5, "y1": 2, "x2": 3, "y2": 4}}
    ]

    assert store.succeed(job.id, detections=detections, timings_ms={"inference": 12.5})
    done = store.get(job.id)
    assert store.succeed(job.id, detections=[], timings_ms={"inference": 1.0}) is False
    assert store.fail(job.id, code=ErrorCode.INTERNAL_ERROR, message="second delivery") is False

    assert done is not None and store.get(job.id) == done
    assert done.status is JobStatus.SUCCEEDED
    assert (done.detections, done.timings_ms) == (detections, {"inference": 12.5})
    assert done.finished_at is not None and done.started_at is not None
    assert done.finished_at > done.started_at


def test_fail_records_the_error_of_a_running_job_only(store: JobStore) -> None:
    job = make_job(store)
    assert store.fail(job.id, code=ErrorCode.CORRUPT, message="truncated") is False  # still queued
    store.claim(job.id, worker="w1")

    assert store.fail(job.id, code=ErrorCode.CORRUPT, message="truncated", timings_ms={"decode": 0.5})

    failed = store.get(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert (failed.error_code, failed.error_message) == ("corrupt", "truncated")
    assert (failed.timings_ms, failed.detections) == ({"decode": 0.5}, None)


def test_a_claim_that_is_no_new_delivery_leaves_attempts_alone(store: JobStore) -> None:
    job = make_job(store)
    first = store.claim(job.id, worker="w1")
    again = store.claim(job.id, worker="w1", delivery=False)
    assert first is not None and again is not None
    assert (first.attempts, again.attempts, again.status) == (1, 1, JobStatus.RUNNING)


def test_the_first_claim_of_a_queued_job_is_a_delivery_even_from_a_retry(store: JobStore) -> None:
    # The task's first try lost the database before claiming; its retry is what delivers the job.
    job = make_job(store)
    claimed = store.claim(job.id, worker="w1", delivery=False)
    assert claimed is not None
    assert (claimed.attempts, claimed.status) == (1, JobStatus.RUNNING)


def _requeue_running(store: JobStore, before: datetime) -> list[str]:
    """`requeue_lost` of running jobs alone (no queued job is short of a message)."""
    return store.requeue_lost(running_before=before, queued_before=before, queued=0)


def test_requeue_lost_hands_back_only_jobs_running_since_before_the_cutoff_once(
    store: JobStore, clock: FakeClock
) -> None:
    stalled = make_job(store)
    assert store.claim(stalled.id, worker="died") is not None
    waiting = make_job(store)  # queued, never started: its message is still on the broker
    done = make_job(store)
    assert store.claim(done.id, worker="w") is not None
    assert store.succeed(done.id, detections=[], timings_ms={})
    clock.advance(timedelta(minutes=10))
    cutoff = clock.now
    fresh = make_job(store)
    assert store.claim(fresh.id, worker="alive") is not None

    assert _requeue_running(store, cutoff) == [stalled.id]

    requeued = store.get(stalled.id)
    assert requeued is not None and requeued.status is JobStatus.QUEUED
    assert requeued.attempts == 1  # counted again only when a worker claims it
    assert _requeue_running(store, cutoff) == []
    for other, status in (
        (waiting, JobStatus.QUEUED),
        (done, JobStatus.SUCCEEDED),
        (fresh, JobStatus.RUNNING),
    ):
        after = store.get(other.id)
        assert after is not None and after.status is status


def test_a_requeued_job_whose_message_never_came_is_handed_back_again_a_period_later(
    store: JobStore, clock: FakeClock
) -> None:
    job = make_job(store)
    assert store.claim(job.id, worker="died") is not None
    clock.advance(timedelta(minutes=10))
    assert _requeue_running(store, clock.now) == [job.id]
    # The publish after it failed (broker down): the job sits queued with no message, one short.
    clock.advance(timedelta(minutes=10))
    assert store.requeue_lost(running_before=clock.now, queued_before=clock.now, queued=1) == [job.id]
    claimed = store.claim(job.id, worker="w")
    assert claimed is not None and claimed.attempts == 2


def test_requeue_lost_hands_back_as_many_of_the_oldest_queued_jobs_as_the_broker_is_short_of(
    store: JobStore, clock: FakeClock
) -> None:
    old = [make_job(store) for _ in range(4)]
    clock.advance(timedelta(minutes=5))
    cutoff = clock.now
    young = make_job(store)  # submitted a moment ago: its message may still be on its way

    # Two messages missing: the two oldest queued jobs come back, once per period.
    assert store.requeue_lost(running_before=cutoff, queued_before=cutoff, queued=2) == [old[0].id, old[1].id]
    assert store.requeue_lost(running_before=cutoff, queued_before=cutoff, queued=2) == [old[2].id, old[3].id]
    # Every old one was handed back just now; the young one never is before its time.
    assert store.requeue_lost(running_before=cutoff, queued_before=cutoff, queued=10) == []
    assert store.requeue_lost(running_before=clock.now, queued_before=clock.now, queued=0) == []
    requeued = store.get(old[0].id)
    assert requeued is not None and (requeued.status, requeued.attempts) == (JobStatus.QUEUED, 0)
    assert store.count_queued() == 5
    clock.advance(timedelta(minutes=5))
    later = store.requeue_lost(running_before=clock.now, queued_before=clock.now, queued=10)
    assert set(later) == {j.id for j in old} | {young.id}


def test_cancel_cancels_a_queued_job_which_then_cannot_be_claimed_or_finished(store: JobStore) -> None:
    job = make_job(store)

    cancelled = store.cancel(job.id)

    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.finished_at is not None
    assert store.cancel(job.id) is None
    assert store.claim(job.id, worker="w1") is None
    assert store.succeed(job.id, detections=[], timings_ms={}) is False
    assert store.get(job.id) == cancelled


def test_cancel_leaves_a_running_job_alone(store: JobStore) -> None:
    job = make_job(store)
    running = store.claim(job.id, worker="w1")

    assert store.cancel(job.id) is None
    assert store.get(job.id) == running


def test_delete_removes_a_finished_job_and_its_orphaned_image_but_keeps_a_shared_one(
    store: JobStore, engine: Engine
) -> None:
    shared = make_image(b"shared")
    first = finished(store, JobStatus.CANCELLED)
    a = store.create(image=shared, model="m", params={})
    b = store.create(image=shared, model="m", params={})
    store.cancel(a.id)
    store.cancel(b.id)

    assert store.delete(first.id)
    assert store.get(first.id) is None and store.image_data(first.image_sha256) is None
    assert store.delete(a.id)
    assert store.image_data(shared.sha256) == shared.data
    assert store.delete(b.id)
    assert image_count(engine) == 0
    assert store.delete(b.id) is False


def test_delete_refuses_a_job_that_is_not_finished(store: JobStore) -> None:
    queued = make_job(store)
    running = make_job(store, make_image(b"other"))
    store.claim(running.id, worker="w1")

    assert store.delete(queued.id) is False and store.delete(running.id) is False
    assert store.get(queued.id) is not None and store.get(running.id) is not None


def test_discard_removes_a_job_in_any_state_and_its_orphaned_image(store: JobStore, engine: Engine) -> None:
    queued = make_job(store)
    running = make_job(store, make_image(b"other"))
    store.claim(running.id, worker="w1")

    assert store.discard(queued.id) and store.discard(running.id)
    assert store.get(queued.id) is None and store.get(running.id) is None
    assert image_count(engine) == 0
    assert store.discard(queued.id) is False


def test_purge_deletes_only_jobs_finished_before_the_cutoff(
    store: JobStore, clock: FakeClock, engine: Engine
) -> None:
    shared = make_image(b"shared")
    old = [finished(store, s) for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)]
    old_shared = store.create(image=shared, model="m", params={})
    store.cancel(old_shared.id)
    still_queued = make_job(store, make_image(b"queued"))
    clock.advance(timedelta(days=1))
    cutoff = clock()
    recent = store.create(image=shared, model="m", params={})
    store.cancel(recent.id)

    assert store.purge(finished_before=cutoff, batch_size=2) == 4

    assert all(store.get(job.id) is None for job in [*old, old_shared])
    assert store.get(still_queued.id) is not None and store.get(recent.id) is not None
    assert image_count(engine) == 2  # the queued job's and the shared one
    assert store.purge(finished_before=cutoff) == 0


def test_timestamps_are_aware_utc_whatever_the_clock_zone(engine: Engine) -> None:
    store_default = JobStore(engine)
    plus_two = timezone(timedelta(hours=2))
    store_cest = JobStore(engine, clock=lambda: datetime(2025, 6, 1, 14, 0, tzinfo=plus_two))

    job = make_job(store_default)
    store_default.claim(job.id, worker="w1")
    store_default.succeed(job.id, detections=[], timings_ms={})
    other = make_job(store_cest, make_image(b"other"))

    done = store_default.get(job.id)
    assert done is not None and done.started_at is not None and done.finished_at is not None
    for stamp in (done.created_at, done.started_at, done.finished_at, other.created_at):
        assert stamp.tzinfo is UTC
    assert abs(done.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert other.created_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_ping_succeeds_on_a_live_database(store: JobStore) -> None:
    store.ping()


STORE_CALLS: dict[str, Callable[[JobStore], object]] = {
    "ping": lambda s: s.ping(),
    "get": lambda s: s.get(str(uuid.uuid4())),
    "page": lambda s: s.page(limit=10),
    "create": lambda s: s.create(
        image=ImageIn.of(b"x", content_type="image/png", width=1, height=1), model="m", params={}
    ),
    "claim": lambda s: s.claim(str(uuid.uuid4()), worker="w"),
    "purge": lambda s: s.purge(finished_before=datetime.now(UTC)),
}


@pytest.mark.parametrize("call", list(STORE_CALLS))
def test_an_unreachable_database_is_one_database_unavailable_error_whatever_the_call(call: str) -> None:
    engine = create_engine_for("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    try:
        with pytest.raises(DatabaseUnavailable, match="cannot be reached") as info:
            STORE_CALLS[call](JobStore(engine))
    finally:
        engine.dispose()
    assert isinstance(info.value.__cause__, OperationalError)  # the driver's own error, kept for the logs
    assert "127.0.0.1" not in info.value.message  # what a client may see names no host


def test_every_pooled_connection_taken_is_database_unavailable_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'visionq.db'}"
    migrate_database(url)
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        with engine.connect(), pytest.raises(DatabaseUnavailable) as info:  # the one connection, held
            JobStore(engine).get(str(uuid.uuid4()))
    finally:
        engine.dispose()
    assert isinstance(info.value.__cause__, PoolTimeout)
