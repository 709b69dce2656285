"""Requests waiting for jobs to finish, woken by a push rather than a loop of database reads.

A `JobEvents` source (PostgreSQL's LISTEN/NOTIFY, or the broker's fanout where the database is SQLite)
tells `JobWaiters` which job changed; the requests waiting on that job wake and read it once. A waiting
request costs nothing while nothing happens to its job. The source is started on the first wait.

The order that makes a wake-up impossible to miss: a waiter is registered before the job's message is
published (`expect`), so a change that comes afterwards finds it; the source calls `on_gap` each time
it (re)connects, which wakes every waiter to read its job again, since changes before that went
unheard; and a waiter reads its job once more at its deadline, whatever it heard.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from visionq.errors import NotFound, ServiceUnavailable
from visionq.store import Job, JobStore


class JobEvents(Protocol):
    """Where job changes come from: started once, calling back from its own thread."""

    def start(self, on_change: Callable[[str, str], None], on_gap: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class Waiter:
    """One request's interest in one job: set when the job may have changed."""

    def __init__(self, waiters: JobWaiters, loop: asyncio.AbstractEventLoop) -> None:
        self._waiters = waiters
        self._loop = loop
        self.event = asyncio.Event()
        self.job_id: str | None = None

    def register(self, job_id: str) -> None:
        """Start listening for `job_id`; may be called from any thread (a threadpool worker)."""
        self.job_id = job_id
        self._waiters._add(self)

    def close(self) -> None:
        """Stop listening (the request is answered, or failed before its job was published)."""
        self._waiters._remove(self)

    def wake(self) -> None:
        """Thread-safe: set the event on its own loop."""
        try:
            self._loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:
            pass  # the loop is closed: the request is gone


class JobWaiters:
    """Every waiting request of this API process, by job id."""

    def __init__(self, events: JobEvents) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._by_job: dict[str, set[Waiter]] = {}
        self._started = False

    def expect(self) -> Waiter:
        """A waiter for a job about to be published; `register` it with the job's id before publishing."""
        self._ensure_started()
        return Waiter(self, asyncio.get_running_loop())

    async def wait(self, waiter: Waiter, store: JobStore, job: Job, timeout: float) -> Job:
        """The job once it is finished, or as it is when `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while not job.status.terminal:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(waiter.event.wait(), left)
            except TimeoutError:
                pass  # read once more at the deadline: a lost wake-up costs latency, not the result
            waiter.event.clear()
            latest = await run_in_threadpool(store.get, job.id)
            if latest is None:
                raise NotFound(f"job {job.id} was deleted while waiting for it")
            job = latest
        return job

    async def follow(self, waiter: Waiter, store: JobStore, job: Job, recheck: float) -> AsyncIterator[Job]:
        """The job each time its status changes, until it is finished (the last one yielded).

        `job` was read after `waiter` was registered, so no change after it goes unheard; it is not
        yielded again. Between changes nothing runs but the event's wait: no thread, no connection. The
        job is read again every `recheck` seconds all the same, so a lost wake-up costs at most that.
        """
        while not job.status.terminal:
            try:
                await asyncio.wait_for(waiter.event.wait(), recheck)
            except TimeoutError:
                pass
            waiter.event.clear()
            try:
                latest = await run_in_threadpool(store.get, job.id)
            except ServiceUnavailable:
                # The database is away: keep following. Its events source wakes every waiter once it
                # has reconnected (`gap`), and the recheck reads again meanwhile.
                continue
            if latest is None:
                raise NotFound(f"job {job.id} was deleted")
            if (latest.status, latest.attempts) != (job.status, job.attempts):
                yield latest
            job = latest

    def changed(self, job_id: str, _status: str = "") -> None:
        """The source's callback: job `job_id` changed (its waiters read it; the row is the truth)."""
        with self._lock:
            waiting = list(self._by_job.get(job_id, ()))
        for waiter in waiting:
            waiter.wake()

    def gap(self) -> None:
        """The source's callback: changes may have gone unheard; every waiter reads its job again."""
        with self._lock:
            waiting = [w for ws in self._by_job.values() for w in ws]
        for waiter in waiting:
            waiter.wake()

    @property
    def waiting(self) -> int:
        """How many requests wait now."""
        with self._lock:
            return sum(len(ws) for ws in self._by_job.values())

    def close(self) -> None:
        """Stop the source (the API is shutting down)."""
        with self._lock:
            started, self._started = self._started, False
        if started:
            self._events.stop()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._events.start(self.changed, self.gap)

    def _add(self, waiter: Waiter) -> None:
        assert waiter.job_id is not None
        with self._lock:
            self._by_job.setdefault(waiter.job_id, set()).add(waiter)

    def _remove(self, waiter: Waiter) -> None:
        if waiter.job_id is None:
            return
        with self._lock:
            waiting = self._by_job.get(waiter.job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._by_job[waiter.job_id]
