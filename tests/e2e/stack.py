"""Running visionq's own processes for end-to-end tests: start, wait until ready, stop with no orphans."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import visionq_env, wait_until
from visionq.models.cache import ModelCache

VISIONQ = [sys.executable, "-m", "visionq"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Processes:
    """Processes started in their own process groups, with their output in log files."""

    logs: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append((name, proc))
        return proc

    def proc(self, name: str) -> subprocess.Popen[bytes]:
        """The process started as `name`."""
        return next(proc for started, proc in self.started if started == name)

    def pid(self, name: str) -> int:
        """The pid of the process started as `name`."""
        return self.proc(name).pid

    def output(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM every main process, give them 20 s, then SIGKILL every group, even if waiting failed.

        SIGTERM to the main process only, as systemd and compose stop them: a worker drains and stops
        its own children. SIGTERM to a worker's whole group killed a pool child, which the main process
        replaced, and that new child held the main process until the SIGKILL, 20 s later.
        """
        try:
            for _, proc in self.started:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for _, proc in self.started:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for _, proc in self.started:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def processes(logs: Path) -> Iterator[Processes]:
    procs = Processes(logs)
    try:
        yield procs
    finally:
        procs.stop()


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def wait_ready(base_url: str, procs: Processes, *, timeout: float = 90.0) -> None:
    """Poll /readyz until it answers 200; fail with the processes' output if it never does."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, proc in procs.started:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{procs.output(name)[-4000:]}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    logs = "\n".join(f"--- {name}\n{procs.output(name)[-3000:]}" for name, _ in procs.started)
    raise AssertionError(f"not ready after {timeout} s: {last}\n{logs}")


def wait_finished(client: httpx.Client, job_id: str, *, timeout: float = 90.0) -> dict[str, object]:
    """Poll the job over HTTP until it is no longer queued or running."""

    def finished() -> dict[str, object] | None:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
        return None if job["status"] in ("queued", "running") else job

    return wait_until(finished, timeout_s=timeout, what=f"job {job_id} finished", interval_s=0.2)


def processes_with_data_dir(data_dir: Path) -> list[int]:
    """Pids of live processes whose environment names `data_dir`: what must be gone after a stop."""
    needle = f"VISIONQ_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Service:
    client: httpx.Client
    api_data_dir: Path
    worker_data_dir: Path
    procs: Processes
    worker_env: dict[str, str] = field(default_factory=dict)

    def start_worker(
        self,
        name: str,
        *,
        concurrency: int = 1,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Another `visionq worker` on the service's broker and database (its own node name), run under
        the command `prefix` (`ip netns exec NS`, say) with `env` in place of the service's worker's."""
        args = [*prefix, *VISIONQ, "worker", "--concurrency", str(concurrency), "--name", f"{name}@%h"]
        return self.procs.start(name, args, self.worker_env if env is None else env)


def _seed_models(model_cache: ModelCache, data_dir: Path) -> None:
    """Give a data dir the session's pulled model (the API machine has pulled it, as in production)."""
    shutil.copytree(model_cache.root, data_dir / "models")


@contextmanager
def running_service(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model_cache: ModelCache,
    *,
    beat: bool = False,
    concurrency: int = 1,
    worker_args: Sequence[str] = (),
    **settings: str,
) -> Iterator[Service]:
    """api + one worker of `concurrency` children (and `worker_args`), and `visionq beat` if asked. On
    RabbitMQ (or Redis) + PostgreSQL the worker plays "another machine": its own empty data dir, sharing
    only the broker and the database with the API. `settings` (VISIONQ_ settings by name) go to every
    process; a `broker_url` among them replaces the broker the param names."""
    api_dir = tmp_path / "api"
    _seed_models(model_cache, api_dir)
    if request.param in ("rabbitmq-postgres", "redis-postgres"):
        create_db: Callable[[], str] = request.getfixturevalue("postgres_databases")
        if "broker_url" in settings:  # a broker of the test's own (a RabbitMQ cluster)
            broker = settings["broker_url"]
        elif request.param == "redis-postgres":
            broker = request.getfixturevalue("redis_url")
        else:
            create_vhost: Callable[[], str] = request.getfixturevalue("rabbitmq_vhosts")
            broker = create_vhost()
        shared = {"database_url": create_db(), "broker_url": broker, **settings}
        worker_dir = tmp_path / "worker-machine"
    else:
        # One machine: the embedded database and broker live in the one data dir.
        shared = dict(settings)
        worker_dir = api_dir
    port = free_port()
    with processes(tmp_path / "logs") as procs:
        procs.start("api", [*VISIONQ, "api", "--port", str(port)], visionq_env(api_dir, **shared))
        worker = [*VISIONQ, "worker", "--concurrency", str(concurrency), *worker_args]
        worker_env = visionq_env(worker_dir, **shared)
        procs.start("worker", worker, worker_env)
        if beat:
            # On one machine beat shares the data dir, whose folders are the broker; elsewhere it is
            # a machine of its own.
            beat_dir = worker_dir if worker_dir == api_dir else tmp_path / "beat"
            procs.start("beat", [*VISIONQ, "beat"], visionq_env(beat_dir, **shared))
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield Service(client, api_dir, worker_dir, procs, worker_env)
