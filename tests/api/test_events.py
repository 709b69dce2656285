"""GET /v1/jobs/{id}/events: Server-Sent Events from a real uvicorn server, on both backends, with the
worker's own `run_job` finishing the jobs."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from tests.api.conftest import Stack, complete, upload
from tests.e2e.stack import free_port
from tests.helpers import wait_until
from visionq.api.deps import Services
from visionq.client import sse
from visionq.store import JobStatus

TERMINAL = {s.value for s in JobStatus if s.terminal}


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server in a thread (real sockets, real disconnects); its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=10, what="uvicorn started")
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def services_of(stack: Stack) -> Services:
    app = stack.client.app
    assert isinstance(app, FastAPI)
    services = app.state.services
    assert isinstance(services, Services)
    return services


def parse(lines: list[str]) -> list[tuple[str, Any]]:
    """(event, data as JSON) of each event in an SSE stream's lines; keep-alives dropped."""
    return [(e.event, json.loads(e.data)) for e in sse.parse(lines) if e is not None]


async def follow(client: httpx.AsyncClient, job_id: str, first: asyncio.Event | None = None) -> list[str]:
    """The statuses a stream of the job's events sent, until the server ended it."""
    statuses: list[str] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines: list[str] = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "":
                for name, data in parse(lines):
                    assert name == "job" and data["id"] == job_id
                    statuses.append(data["status"])
                lines = []
                if first is not None:
                    first.set()
    return statuses


def follow_while(
    stack: Stack, job_id: str, meanwhile: Callable[[httpx.AsyncClient], Awaitable[None]]
) -> list[str]:
    """The statuses one client's stream of the job sent, `meanwhile` run once its first event came."""

    async def scenario(base: str) -> list[str]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            first = asyncio.Event()
            task = asyncio.create_task(follow(client, job_id, first))
            await asyncio.wait_for(first.wait(), 10)
            await meanwhile(client)
            return await asyncio.wait_for(task, 30)

    with serving(stack.client.app) as base:  # type: ignore[arg-type]
        return asyncio.run(scenario(base))


def queued_job(stack: Stack, data: bytes) -> str:
    response = upload(stack.client, data)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_a_stream_starts_with_the_current_state_and_ends_after_the_job_finishes(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    job_id = queued_job(stack, samples["bus.jpg"])

    async def finish(_client: httpx.AsyncClient) -> None:
        await asyncio.to_thread(complete, stack, job_id)

    statuses = follow_while(stack, job_id, finish)
    assert statuses[0] == "queued"
    assert statuses[-1] == "succeeded"
    # Changes pushed one by one; two close together may be read as one (the row is the truth).
    assert statuses[1:-1] in ([], ["running"])
    assert services_of(stack).waiters.waiting == 0


def test_a_client_that_connects_after_the_end_gets_the_finished_job_and_the_stream_ends(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    job_id = queued_job(stack, samples["zidane.jpg"])
    done = complete(stack, job_id)
    with (
        serving(stack.client.app) as base,  # type: ignore[arg-type]
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        response = client.get(f"/v1/jobs/{job_id}/events")
    events = parse(response.text.split("\n"))
    assert [(name, data["status"]) for name, data in events] == [("job", "succeeded")]
    assert len(events[0][1]["detections"]) == len(done.detections or [])
    assert response.headers["cache-control"] == "no-cache"


def test_an_unknown_job_is_404_before_any_stream(stack: Stack) -> None:
    response = stack.client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert services_of(stack).waiters.waiting == 0


def test_a_job_cancelled_while_followed_ends_its_stream_with_its_cancelled_state(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    job_id = queued_job(stack, samples["bus.jpg"])

    async def cancel(client: httpx.AsyncClient) -> None:
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 200

    assert follow_while(stack, job_id, cancel) == ["queued", "cancelled"]


def test_clients_that_go_away_leave_no_waiter_behind(stack: Stack, samples: dict[str, bytes]) -> None:
    job_id = queued_job(stack, samples["bus.jpg"])
    waiters = services_of(stack).waiters
    clients = 50

    async def connect_and_leave(base: str) -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            first = [asyncio.Event() for _ in range(clients)]
            tasks = [asyncio.create_task(follow(client, job_id, event)) for event in first]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 30)
            assert waiters.waiting == clients
            for task in tasks:
                task.cancel()  # the client hangs up mid-stream
            await asyncio.gather(*tasks, return_exceptions=True)

    with serving(stack.client.app) as base:  # type: ignore[arg-type]
        asyncio.run(connect_and_leave(base))
        wait_until(lambda: waiters.waiting == 0, timeout_s=10, what="every waiter dropped")
    assert stack.store.get(job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_200_clients_wait_at_once_holding_no_thread_and_no_connection_and_all_see_the_end(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    clients = 200
    jobs = [queued_job(stack, samples["bus.jpg" if i % 2 else "zidane.jpg"]) for i in range(20)]
    waiters = services_of(stack).waiters
    seen: dict[str, int] = {}

    async def scenario(base: str) -> list[list[str]]:
        limits = httpx.Limits(max_connections=clients + 10)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            threads_before = threading.active_count()
            first = [asyncio.Event() for _ in range(clients)]
            tasks = [
                asyncio.create_task(follow(client, jobs[i % len(jobs)], first[i])) for i in range(clients)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 60)
            await asyncio.sleep(0.5)  # settled: every stream waits on its event
            seen["waiting"] = waiters.waiting
            seen["connections"] = stack.engine.pool.checkedout()  # type: ignore[attr-defined]
            # The stream's first read ran in the threadpool, which keeps its idle threads (at most 40,
            # anyio's default); a stream that held a thread while waiting would need 200.
            seen["threads"] = threading.active_count() - threads_before
            for job_id in jobs:
                await asyncio.to_thread(complete, stack, job_id)
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    with serving(stack.client.app) as base:  # type: ignore[arg-type]
        streams = asyncio.run(scenario(base))
    assert seen["waiting"] == clients
    assert seen["connections"] == 0
    assert seen["threads"] <= 41
    assert len(streams) == clients
    assert all(s[0] == "queued" and s[-1] == "succeeded" for s in streams), streams
    assert waiters.waiting == 0
