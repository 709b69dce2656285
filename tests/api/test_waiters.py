"""JobWaiters: a waiting request wakes when its job changes, and at its deadline whatever it heard."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from visionq.api.waiters import JobWaiters
from visionq.errors import ErrorCode, NotFound
from visionq.store import ImageIn, Job, JobStore, create_engine_for, migrate


class ManualEvents:
    """A JobEvents source the test drives: it records the callbacks and how often it was started."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0
        self.on_change: Callable[[str, str], None] | None = None
        self.on_gap: Callable[[], None] | None = None

    def start(self, on_change: Callable[[str, str], None], on_gap: Callable[[], None]) -> None:
        self.started += 1
        self.on_change, self.on_gap = on_change, on_gap

    def stop(self) -> None:
        self.stopped += 1


class CountingStore(JobStore):
    """The real store, counting the reads a waiter makes."""

    reads = 0

    def get(self, job_id: str) -> Job | None:
        self.reads += 1
        return super().get(job_id)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'visionq.db'}")
    migrate(engine)
    return CountingStore(engine)


def queued(store: JobStore) -> Job:
    image = ImageIn.of(b"\x89PNG bytes", content_type="image/png", width=8, height=8)
    return store.create(image=image, model="yolov4-tiny", params={})


def wait(
    waiters: JobWaiters, store: JobStore, job: Job, *, timeout: float, meanwhile: Callable[[], None]
) -> Job:
    """Wait for `job` as /v1/detect does (a waiter registered first), while `meanwhile` runs in a thread."""

    async def scenario() -> Job:
        waiter = waiters.expect()
        waiter.register(job.id)
        thread = threading.Thread(target=meanwhile)
        thread.start()
        try:
            return await waiters.wait(waiter, store, job, timeout=timeout)
        finally:
            waiter.close()
            thread.join()

    return asyncio.run(scenario())


def finish(store: JobStore, job_id: str) -> None:
    store.claim(job_id, worker="w")
    store.fail(job_id, code=ErrorCode.CORRUPT, message="x")


def test_a_waiter_wakes_on_its_job_s_change_and_reads_it_once(store: CountingStore) -> None:
    events = ManualEvents()
    waiters = JobWaiters(events)
    job, other = queued(store), queued(store)

    def worker() -> None:
        assert events.on_change is not None
        events.on_change(other.id, "running")  # another job's change wakes nobody here
        finish(store, job.id)
        events.on_change(job.id, "failed")

    done = wait(waiters, store, job, timeout=30, meanwhile=worker)

    assert done.status.value == "failed"
    assert store.reads == 1  # no loop of reads: one, when woken
    assert events.started == 1
    assert waiters.waiting == 0


def test_a_gap_wakes_every_waiter_to_read_again(store: CountingStore) -> None:
    events = ManualEvents()
    waiters = JobWaiters(events)
    job = queued(store)

    def worker() -> None:
        finish(store, job.id)
        # The change itself went unheard (the listener was reconnecting): only the gap is reported.
        assert events.on_gap is not None
        events.on_gap()

    assert wait(waiters, store, job, timeout=30, meanwhile=worker).status.value == "failed"
    assert store.reads == 1


def test_with_no_news_the_job_is_read_once_at_the_deadline(store: CountingStore) -> None:
    waiters = JobWaiters(ManualEvents())
    job = queued(store)
    finish(store, job.id)  # finished, and nobody said so

    assert wait(waiters, store, job, timeout=0.2, meanwhile=lambda: None).status.value == "failed"
    assert store.reads == 1


def test_a_job_deleted_while_waited_for_is_not_found(store: CountingStore) -> None:
    events = ManualEvents()
    waiters = JobWaiters(events)
    job = queued(store)

    def delete() -> None:
        store.discard(job.id)
        assert events.on_change is not None
        events.on_change(job.id, "cancelled")

    with pytest.raises(NotFound):
        wait(waiters, store, job, timeout=30, meanwhile=delete)
    assert waiters.waiting == 0


def test_close_stops_the_source_once_and_only_if_it_started() -> None:
    events = ManualEvents()
    JobWaiters(events).close()
    assert events.stopped == 0

    waiters = JobWaiters(events)

    async def scenario() -> None:
        waiters.expect().close()

    asyncio.run(scenario())
    waiters.close()
    waiters.close()
    assert (events.started, events.stopped) == (1, 1)
