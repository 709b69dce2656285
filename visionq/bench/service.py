"""Load on a running visionq service: many jobs submitted at once, figures from the job rows.

It talks to the API over HTTP like any client (bounded in jobs and time; meant for loopback or a
test deployment), then reads each job's own timestamps, so the latencies are the service's, not the
client's polling.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

# A job not finished this long after the last submission counts as lost: the run stops there.
_FINISH_TIMEOUT_S = 300.0


@dataclass(slots=True)
class LoadResult:
    """What a load run measured."""

    jobs: int
    succeeded: int
    failed: int
    unfinished: int
    refused: int  # submissions answered with a status other than 202
    wall_s: float  # first submission to last finish
    submit_ms: list[float] = field(default_factory=list)  # HTTP round trip of each accepted POST
    end_to_end_ms: list[float] = field(default_factory=list)  # created_at → finished_at, per job
    queue_wait_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)

    @property
    def jobs_per_second(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def run_load(
    base_url: str,
    images: Sequence[tuple[str, bytes]],
    *,
    jobs: int,
    concurrency: int,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Submit `jobs` jobs (cycling through `images`) from `concurrency` client threads, then wait."""
    submitted: list[str] = []
    submit_ms: list[float] = []
    refused = 0
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        """One keep-alive client per submitting thread."""
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=timeout_s)
            with lock:
                clients.append(local.client)
        c: httpx.Client = local.client
        return c

    def submit(i: int) -> None:
        nonlocal refused
        name, data = images[i % len(images)]
        start = time.perf_counter()
        response = client().post("/v1/jobs", files={"image": (name, data)})
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            if response.status_code == 202:
                submitted.append(response.json()["id"])
                submit_ms.append(elapsed)
            else:
                refused += 1

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(submit, range(jobs)))
    finally:
        for c in clients:
            c.close()
    with httpx.Client(base_url=base_url, timeout=timeout_s) as poller:
        finished = _wait_all(poller, submitted)
    wall = time.perf_counter() - started
    result = LoadResult(
        jobs=jobs,
        succeeded=sum(1 for j in finished.values() if j["status"] == "succeeded"),
        failed=sum(1 for j in finished.values() if j["status"] == "failed"),
        unfinished=len(submitted) - len(finished),
        refused=refused,
        wall_s=wall,
        submit_ms=submit_ms,
    )
    for job in finished.values():
        if job["status"] != "succeeded":
            continue
        created, done = _when(job["created_at"]), _when(job["finished_at"])
        result.end_to_end_ms.append((done - created).total_seconds() * 1000)
        timings = job.get("timings_ms") or {}
        result.queue_wait_ms.append(float(timings.get("queue_wait", 0.0)))
        result.inference_ms.append(float(timings.get("inference", 0.0)))
    return result


def _wait_all(client: httpx.Client, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Poll until every job is finished (or the timeout): returns the finished jobs by id."""
    pending = set(job_ids)
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + _FINISH_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                finished[job_id] = job
                pending.discard(job_id)
        if pending:
            time.sleep(0.2)
    return finished


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)
