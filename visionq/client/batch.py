"""Many files through the API at once: N uploads in flight, each followed to its end when asked.

Threads, not asyncio: everything a file needs is blocking (hashing it, reading it as it is sent, a
stream that waits for its job), one `httpx.Client` is safe to share between threads, and N is small —
it bounds what this client asks of the server, not how much this machine can do. Each thread takes a
file, sends it, waits for its job (with `wait`) and takes the next, so at most N jobs of the run are
queued or followed at a time, and as many connections are open. The threads are daemons: an
interrupted run exits at once, and its Idempotency-Keys make the rerun pick up the jobs it had made.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from visionq.client.client import TERMINAL, ApiError, VisionqClient
from visionq.client.files import file_sha256, idempotency_key
from visionq.client.results import Outcome

UNREADABLE = "unreadable"  # the file could not be read here: never sent
INTERNAL = "client_error"  # a bug of this client's


@dataclass(frozen=True, slots=True)
class Request:
    """What every file of a run is sent with; None: the server's default."""

    model: str | None = None
    conf: float | None = None
    wait: bool = True
    timeout_s: float = 300.0


def run(
    client: VisionqClient,
    paths: Sequence[Path],
    request: Request,
    *,
    concurrency: int,
    finished: Mapping[tuple[str, str], Outcome] | None = None,
) -> Iterator[Outcome]:
    """Each file's outcome as it comes, in the order they end. A file whose (path, key) is in
    `finished` is not sent: its recorded outcome comes back, marked `earlier`."""
    todo: queue.Queue[Path] = queue.Queue()
    for path in paths:
        todo.put(path)
    done: queue.Queue[Outcome] = queue.Queue()
    stop = threading.Event()
    known = finished or {}

    def work() -> None:
        while not stop.is_set():
            try:
                path = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put(_one(client, path, request, known))
            except Exception as exc:  # a bug here must fail its file, not leave the run waiting forever
                done.put(Outcome(str(path), None, None, None, "failed", error=_error(INTERNAL, repr(exc))))

    for n in range(max(1, min(concurrency, len(paths)))):
        threading.Thread(target=work, name=f"visionq-submit-{n}", daemon=True).start()
    try:
        for _ in paths:
            yield done.get()
    finally:
        stop.set()  # a consumer that stopped early (Ctrl-C) wants no more files sent


def _one(
    client: VisionqClient, path: Path, request: Request, finished: Mapping[tuple[str, str], Outcome]
) -> Outcome:
    name = str(path)
    try:
        sha256 = file_sha256(path)
    except OSError as exc:
        return Outcome(name, None, None, None, "failed", error=_error(UNREADABLE, str(exc)))
    key = idempotency_key(sha256, model=request.model, conf=request.conf)
    earlier = finished.get((name, key))
    if earlier is not None:
        return earlier
    job_id = None
    status = "failed"
    try:
        job = client.submit(path, model=request.model, conf=request.conf, idempotency_key=key).job
        job_id, status = str(job["id"]), str(job["status"])
        if request.wait and status not in TERMINAL:
            job = client.wait(job_id, timeout_s=request.timeout_s)
            status = str(job["status"])
    except ApiError as exc:
        return Outcome(name, sha256, key, job_id, status, error=_error(exc.code, exc.message))
    except OSError as exc:  # the file went between hashing and sending
        return Outcome(name, sha256, key, job_id, status, error=_error(UNREADABLE, str(exc)))
    return Outcome(
        name, sha256, key, job_id, status, detections=job.get("detections"), error=job.get("error")
    )


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
