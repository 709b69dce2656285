"""`visionq bench streams`: what event streams waiting at once cost an API process, and how fast a job's
end reaches every one of them.

A stack (`ServiceStack`) with its worker stopped (SIGSTOP): jobs queued, N streams of
GET /v1/jobs/{id}/events spread over them, each having read its first event. The API process is then
read while every stream waits (its memory, threads and CPU for `idle_s`; a stream's first read runs in
the threadpool, which keeps up to 40 idle threads after), the worker is let go, and
each stream's end is timed from the job's `finished_at` (the worker's clock; one machine) to the
moment the client read the finished job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import httpx
import psutil

from visionq.bench.service import ServiceStack, multipart_body, numbered, percentile

_TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})
_STREAM_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class StreamsResult:
    streams: int
    jobs: int
    rss_before_mb: float
    rss_waiting_mb: float
    threads_before: int
    threads_waiting: int
    idle_cpu_ms_per_s: float  # the API's CPU while every stream waited
    push_ms: list[float]  # per stream: the job's finished_at to its last event read
    ended: int  # streams that ended with a finished job

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_waiting_mb - self.rss_before_mb) * 1024 / self.streams


def run(stack: ServiceStack, photo: bytes, *, streams: int, jobs: int, idle_s: float = 10.0) -> StreamsResult:
    """Measure `streams` streams over `jobs` jobs on the started `stack` (see the module)."""
    api = psutil.Process(stack.pid("api"))
    os.killpg(stack.pid("worker"), signal.SIGSTOP)
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            ids = [_submit(client, numbered(photo, f"streams-{i}".encode())) for i in range(jobs)]
            try:
                return asyncio.run(_measure(stack, api, ids, streams, idle_s))
            finally:
                os.killpg(stack.pid("worker"), signal.SIGCONT)
                for job_id in ids:  # the database keeps none of them
                    _remove(client, job_id)
    finally:
        os.killpg(stack.pid("worker"), signal.SIGCONT)


def _remove(client: httpx.Client, job_id: str) -> None:
    """Delete the job: a finished one at once (204), a queued one once cancelled (200, then 204)."""
    if client.delete(f"/v1/jobs/{job_id}").status_code == 200:
        client.delete(f"/v1/jobs/{job_id}")


def _submit(client: httpx.Client, data: bytes) -> str:
    body, headers = multipart_body("photo.jpg", data)
    response = client.post("/v1/jobs", content=body, headers=headers)
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


async def _measure(
    stack: ServiceStack, api: psutil.Process, ids: list[str], streams: int, idle_s: float
) -> StreamsResult:
    first = [asyncio.Event() for _ in range(streams)]
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=stack.url, timeout=_STREAM_TIMEOUT_S, limits=limits) as client:
        rss_before, threads_before = api.memory_info().rss / 2**20, api.num_threads()
        tasks = [asyncio.create_task(_follow(client, ids[i % len(ids)], first[i])) for i in range(streams)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), _STREAM_TIMEOUT_S)
        await asyncio.sleep(1.0)  # every stream parked on its event
        cpu_before = sum(api.cpu_times()[:2])
        await asyncio.sleep(idle_s)
        idle_cpu = (sum(api.cpu_times()[:2]) - cpu_before) / idle_s * 1000
        rss_waiting, threads_waiting = api.memory_info().rss / 2**20, api.num_threads()
        os.killpg(stack.pid("worker"), signal.SIGCONT)
        ends = await asyncio.wait_for(asyncio.gather(*tasks), _STREAM_TIMEOUT_S)
    pushed = [(read - finished) * 1000 for read, finished in ends if finished is not None]
    return StreamsResult(
        streams=streams,
        jobs=len(ids),
        rss_before_mb=rss_before,
        rss_waiting_mb=rss_waiting,
        threads_before=threads_before,
        threads_waiting=threads_waiting,
        idle_cpu_ms_per_s=idle_cpu,
        push_ms=pushed,
        ended=len(pushed),
    )


async def _follow(client: httpx.AsyncClient, job_id: str, first: asyncio.Event) -> tuple[float, float | None]:
    """(when the stream's last event was read, the job's finished_at), both as Unix time; the second is
    None when the stream ended without a finished job."""
    finished: float | None = None
    read = 0.0
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            read = time.time()
            first.set()
            job = json.loads(line.removeprefix("data:"))
            if job.get("status") in _TERMINAL and job.get("finished_at"):
                finished = datetime.fromisoformat(job["finished_at"]).timestamp()
    return read, finished


def summary(result: StreamsResult) -> list[tuple[str, str]]:
    """The figures, as label and value rows."""
    push = result.push_ms
    return [
        ("streams · jobs", f"{result.streams:,} · {result.jobs:,}"),
        (
            "API RSS: none waiting → all waiting",
            f"{result.rss_before_mb:.1f} → {result.rss_waiting_mb:.1f} MiB",
        ),
        ("memory per waiting stream", f"{result.kib_per_stream:.1f} KiB"),
        ("API threads: none waiting → all waiting", f"{result.threads_before} → {result.threads_waiting}"),
        ("API CPU while all wait", f"{result.idle_cpu_ms_per_s:.1f} ms/s"),
        ("streams that saw the end", f"{result.ended:,} of {result.streams:,}"),
        (
            "job finished → client read it, p50 · p95 · max",
            f"{percentile(push, 50):.1f} · {percentile(push, 95):.1f} · {max(push, default=0.0):.1f} ms",
        ),
    ]
