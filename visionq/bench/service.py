"""The service benchmark: a visionq stack under load, its CPU per job per process, against the detector.

`ServiceStack` starts `visionq api` and `visionq worker` on a broker and a database of the caller's
choosing, in a scratch data dir that shares the user's model cache. `run_load` drives it over HTTP
the cheapest way a client can wait (POST /v1/detect, woken by the job's end), and reads each job's own
timestamps, so the stages are the service's. CPU time comes from /proc (through psutil), per process
tree: the API, the worker and its children, the broker's and the database's servers, and the client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx
import psutil

# A job not finished this long after its submission counts as lost.
_JOB_TIMEOUT_S: Final = 120.0
_DETECT_TIMEOUT_S: Final = 60.0  # what /v1/detect is asked to wait (its maximum)
_START_TIMEOUT_S: Final = 120.0

# The server processes whose CPU counts as the broker's or the database's, by process name.
BROKER_PROCESSES: Final = {
    "rabbitmq": ("beam.smp", "erl_child_setup", "inet_gethost"),
    "redis": ("redis-server",),
}
DATABASE_PROCESSES: Final = ("postgres",)


# ---- CPU time and memory, from psutil (which reads /proc) ------------------------------------------


def _cpu_s(process: psutil.Process, *, reaped: bool) -> float:
    """CPU seconds of `process`, plus those of its children that ended and were reaped if `reaped`."""
    times = process.cpu_times()
    own: float = times.user + times.system
    return own + (times.children_user + times.children_system if reaped else 0.0)


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and all its descendants, those that ended and were reaped included."""
    try:
        process = psutil.Process(root)
        total = _cpu_s(process, reaped=True)
        descendants = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += _cpu_s(child, reaped=False)
    return total


def tree_rss_mb(root: int) -> dict[int, float]:
    """Resident memory (MB) of `root` and each of its direct children, by pid."""
    sizes: dict[int, float] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(root)
        for member in (process, *process.children()):
            with contextlib.suppress(psutil.NoSuchProcess):
                sizes[member.pid] = member.memory_info().rss / 2**20
    return sizes


def own_cpu_s(pid: int) -> float:
    """CPU seconds of process `pid` alone, its children not counted."""
    try:
        return _cpu_s(psutil.Process(pid), reaped=False)
    except psutil.NoSuchProcess:
        return 0.0


def named_cpu_s(names: Iterable[str]) -> float:
    """CPU seconds of every process whose command name is one of `names` (and of its reaped children)."""
    wanted = set(names)
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in wanted:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += _cpu_s(process, reaped=True)
    return total


def self_cpu_s() -> float:
    """This process's CPU seconds, all threads."""
    return time.process_time()


# ---- the stack -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StackConfig:
    broker: str  # rabbitmq, redis, embedded
    broker_url: str | None
    database_url: str | None  # None: SQLite in the scratch data dir
    runtime: str
    workers: int
    models_dir: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServiceStack:
    """`visionq api` + `visionq worker` in a scratch data dir, each in its own process group."""

    def __init__(self, config: StackConfig, scratch: Path) -> None:
        self.config = config
        self.scratch = scratch
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VISIONQ_DATA_DIR"] = str(self.scratch / "data")
        env["VISIONQ_BROKER_URL"] = self.config.broker_url or ""
        env["VISIONQ_DATABASE_URL"] = self.config.database_url or ""
        env["VISIONQ_RUNTIME"] = self.config.runtime
        env.pop("VISIONQ_THREADS", None)  # each worker child takes its share of the cores
        return env

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    def rss_mb(self) -> dict[str, Any]:
        """Resident memory (MB): the API's process tree, the worker's main process and each child."""
        worker = self.pid("worker")
        workers = tree_rss_mb(worker)
        return {
            "api": sum(tree_rss_mb(self.pid("api")).values()),
            "worker_main": workers.get(worker, 0.0),
            "worker_children": [mb for pid, mb in workers.items() if pid != worker],
        }

    def log(self, name: str) -> str:
        path = self.scratch / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        data = self.scratch / "data"
        data.mkdir(parents=True, exist_ok=True)
        models = data / "models"
        if not models.exists():
            models.symlink_to(self.config.models_dir.resolve(), target_is_directory=True)
        visionq = [sys.executable, "-m", "visionq"]
        self._spawn("api", [*visionq, "api", "--port", str(self.port)])
        self._spawn(
            "worker", [*visionq, "worker", "--concurrency", str(self.config.workers), "--loglevel", "WARNING"]
        )
        self._wait_ready()

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.scratch / f"{name}.log").open("wb") as log:
            self._procs[name] = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                for name, proc in self._procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"visionq {name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}"
                        )
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(
            f"the API was not ready within {_START_TIMEOUT_S:.0f} s:\n{self.log('api')[-3000:]}"
        )

    def stop(self) -> None:
        """SIGTERM each process group, then SIGKILL what is left after 20 s."""
        for proc in self._procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self._procs.values():
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> ServiceStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def scratch_dir(parent: Path) -> Path:
    """A fresh folder for one run's stack."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = parent / f"run-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    return folder


# ---- load ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadResult:
    """What a load run measured, per succeeded job where it is a list."""

    jobs: int
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    refused: int = 0  # answered with neither 200 nor 202
    wall_s: float = 0.0  # first submission to last result
    latency_ms: list[float] = field(default_factory=list)  # client: request sent → finished job in hand
    stages_ms: dict[str, list[float]] = field(default_factory=dict)  # from the job rows
    models: set[str] = field(default_factory=set)  # the models the succeeded jobs ran on
    client_cpu_s: float = 0.0

    @property
    def jobs_per_second(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s else 0.0


STAGES: Final = (
    "http_accept",  # request sent → job row created (upload, form parsing, header probe, insert)
    "queue_wait",  # created → claimed by a worker
    "decode",
    "preprocess",
    "inference",
    "postprocess",
    "store",  # the worker's own reads and writes around the detection: claim → finished, less detection
    "response",  # finished → the client has the answer (the wake-up, the read, the HTTP response)
)


def mean(values: Sequence[float]) -> float:
    """The mean; 0 for no values."""
    return statistics.fmean(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def multipart_body(name: str, data: bytes, model: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The multipart form uploading `data` as `image`, for `model` (None: the API's default)."""
    fields = {} if model is None else {"model": model}
    request = httpx.Request("POST", "http://visionq/", data=fields, files={"image": (name, data)})
    return request.read(), {"Content-Type": request.headers["Content-Type"]}


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def numbered(data: bytes, tag: bytes) -> bytes:
    """The JPEG or PNG `data` with `tag` in metadata every decoder skips: a JPEG comment after the APPn
    segments (EXIF stays where readers look for it), or a PNG tEXt chunk after IHDR. The pixels are the
    same; the sha256 is not, so the store keeps it as the new photo a real upload is."""
    if data[:2] == b"\xff\xd8":
        at = 2
        while data[at] == 0xFF and 0xE0 <= data[at + 1] <= 0xEF:  # APP0..APP15
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        return data[:at] + b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag + data[at:]
    if data[:8] == _PNG_SIGNATURE:
        at = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, fields and CRC
        chunk = b"tEXt" + b"Comment\x00" + tag
        crc = zlib.crc32(chunk).to_bytes(4, "big")
        return data[:at] + (len(chunk) - 4).to_bytes(4, "big") + chunk + crc + data[at:]
    raise ValueError("only JPEG and PNG uploads can be made unique: use --repeat for other formats")


class Uploads:
    """The request bodies of a run's uploads, cycling through `images`, each for `model` (None: the
    API's default).

    With `unique` (the default of `bench service`), upload i carries its photo numbered i under a tag
    of this instance (`numbered`): a service's uploads are new photos, and the same bytes again would
    be stored once, hiding the image write from the figures (4-6 ms of PostgreSQL CPU for a 487 KB
    JPEG before migration 0003). Without it every upload of a photo is the same bytes. Each photo's
    form is encoded once, and only its image part is swapped per upload (httpx spent about a
    millisecond of the client's CPU encoding one).
    """

    def __init__(
        self, images: Sequence[tuple[str, bytes]], *, unique: bool, model: str | None = None
    ) -> None:
        if not images:
            raise ValueError("no images to upload")
        self._token = os.urandom(8).hex().encode() if unique else None
        self._forms = []
        for name, data in images:
            body, headers = multipart_body(name, data, model)
            at = body.index(data)
            self._forms.append((body[:at], data, body[at + len(data) :], headers))
        self._next = iter(range(1 << 62))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._forms)

    def body(self, i: int) -> tuple[bytes, dict[str, str]]:
        """The `i`-th photo's upload (cycling), its bytes unique to this call when uploads are."""
        head, data, tail, headers = self._forms[i % len(self._forms)]
        if self._token is None:
            return head + data + tail, headers
        with self._lock:
            n = next(self._next)
        return head + numbered(data, b"visionq bench " + self._token + b" %d" % n) + tail, headers


class _ThreadClients:
    """One keep-alive HTTP client per calling thread (`clients()`), all closed on leaving the block."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[httpx.Client] = []

    def __call__(self) -> httpx.Client:
        found: httpx.Client | None = getattr(self._local, "client", None)
        if found is None:
            found = self._local.client = httpx.Client(base_url=self._base_url, timeout=_JOB_TIMEOUT_S)
            with self._lock:
                self._all.append(found)
        return found

    def __enter__(self) -> _ThreadClients:
        return self

    def __exit__(self, *_exc: object) -> None:
        for c in self._all:
            c.close()


def run_load(
    base_url: str,
    uploads: Uploads,
    *,
    jobs: int,
    concurrency: int,
    on_done: Callable[[], None] = lambda: None,
) -> LoadResult:
    """`jobs` detections (cycling through the photos of `uploads`) from `concurrency` client threads,
    each waiting with POST /v1/detect for its result before sending the next."""
    result = LoadResult(jobs=jobs)
    lock = threading.Lock()
    counter = iter(range(jobs))
    client = _ThreadClients(base_url)

    def one(i: int) -> None:
        content, headers = uploads.body(i)
        sent_wall, sent = time.time(), time.perf_counter()
        response = client().post(
            "/v1/detect", params={"timeout": _DETECT_TIMEOUT_S}, content=content, headers=headers
        )
        job = response.json() if response.status_code in (200, 202) else None
        if response.status_code == 202 and job is not None:
            job = _poll(client(), job["id"])
        elapsed_ms = (time.perf_counter() - sent) * 1000
        with lock:
            _record(result, job, sent_wall, elapsed_ms)
        on_done()

    def loop() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            one(i)

    cpu_before, started = self_cpu_s(), time.perf_counter()
    with client, ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(loop) for _ in range(concurrency)]:
            future.result()
    result.wall_s = time.perf_counter() - started
    result.client_cpu_s = self_cpu_s() - cpu_before
    return result


def _record(result: LoadResult, job: dict[str, Any] | None, sent_wall: float, elapsed_ms: float) -> None:
    if job is None:
        result.refused += 1
    elif job["status"] == "succeeded":
        result.succeeded += 1
        result.models.add(job["model"])
        result.latency_ms.append(elapsed_ms)
        for stage, ms in _stages(job, sent_wall, sent_wall + elapsed_ms / 1000).items():
            result.stages_ms.setdefault(stage, []).append(ms)
    elif job["status"] in ("queued", "running"):
        result.unfinished += 1
    else:
        result.failed += 1


def _poll(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    """The job once finished (a 202 from /v1/detect: it took longer than its wait), or None."""
    deadline = time.monotonic() + _JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    return client.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def _stages(job: dict[str, Any], sent: float, received: float) -> dict[str, float]:
    """A finished job's stages in ms, from its timestamps (same clock as the client's) and timings."""
    created = _when(job["created_at"])
    started = _when(job["started_at"])
    finished = _when(job["finished_at"])
    timings: dict[str, float] = job.get("timings_ms") or {}
    detection = sum(float(timings.get(k, 0.0)) for k in ("decode", "preprocess", "inference", "postprocess"))
    stages = {
        "http_accept": (created - sent) * 1000,
        "queue_wait": (started - created) * 1000,
        "store": (finished - started) * 1000 - detection,
        "response": (received - finished) * 1000,
    }
    for k in ("decode", "preprocess", "inference", "postprocess"):
        stages[k] = float(timings.get(k, 0.0))
    return stages


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# ---- API costs -----------------------------------------------------------------------------------


def api_costs(
    base_url: str,
    api_pid: int,
    image: tuple[str, bytes],
    *,
    gets: int,
    submits: int,
    worker_pid: int,
    unique: bool = True,
    model: str | None = None,
) -> tuple[float, float]:
    """API CPU ms per submit (POST /v1/jobs, for `model`) of `image` (numbered per submit when
    `unique`, see `Uploads`) and per GET of a finished job, one at a time.

    The worker is paused (SIGSTOP to its process group) meanwhile, so the figures are the API's own
    cost: a worker running detections beside it on two cores inflated a submit's CPU from 2.6 to 4.3
    ms (the caches they share), which the load run's per-job figures include. It resumes after, and
    runs the submitted jobs.
    """
    with httpx.Client(base_url=base_url, timeout=_JOB_TIMEOUT_S) as client:
        probe, headers = multipart_body(*image, model)
        done = client.post(
            "/v1/detect", params={"timeout": _DETECT_TIMEOUT_S}, content=probe, headers=headers
        ).json()
        if done["status"] != "succeeded":
            raise RuntimeError(f"the probe job did not succeed: {done}")
        for _ in range(10):  # warm the route
            client.get(f"/v1/jobs/{done['id']}")
        _signal_group(worker_pid, signal.SIGSTOP)
        try:
            uploads = Uploads([image], unique=unique, model=model)
            get_ms, submit_ms, queued = _timed_requests(client, api_pid, done["id"], uploads, gets, submits)
        finally:
            _signal_group(worker_pid, signal.SIGCONT)
        # Run them before the stack stops: a job left queued on a durable queue is the next run's.
        deadline = time.monotonic() + _JOB_TIMEOUT_S
        for job_id in queued[-8:]:
            wait_finished(client, job_id, deadline)
    return submit_ms, get_ms


def _timed_requests(
    client: httpx.Client, api_pid: int, job_id: str, uploads: Uploads, gets: int, submits: int
) -> tuple[float, float, list[str]]:
    before = tree_cpu_s(api_pid)
    for _ in range(gets):
        client.get(f"/v1/jobs/{job_id}").raise_for_status()
    get_ms = (tree_cpu_s(api_pid) - before) * 1000 / gets
    queued = []
    bodies = [uploads.body(0) for _ in range(submits)]  # made before the API's CPU is read
    before = tree_cpu_s(api_pid)
    for content, headers in bodies:
        response = client.post("/v1/jobs", content=content, headers=headers)
        if response.status_code != 202:
            raise RuntimeError(f"a submit was refused: {response.status_code} {response.text}")
        queued.append(response.json()["id"])
    submit_ms = (tree_cpu_s(api_pid) - before) * 1000 / submits
    return get_ms, submit_ms, queued


# ---- CPU by process over a run -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meters:
    """What to read CPU from: the API and worker process trees, the broker's and database's servers."""

    api_pid: int
    worker_pid: int
    broker: tuple[str, ...]  # process names; empty for the embedded broker (it is in the API and worker)
    database: tuple[str, ...]  # empty for SQLite

    def read(self) -> dict[str, float]:
        return {
            "api": tree_cpu_s(self.api_pid),
            "worker": tree_cpu_s(self.worker_pid),
            "worker_main": own_cpu_s(self.worker_pid),
            "broker": named_cpu_s(self.broker) if self.broker else 0.0,
            "database": named_cpu_s(self.database) if self.database else 0.0,
        }


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


# ---- a deep queue --------------------------------------------------------------------------------


@dataclass(slots=True)
class BacklogResult:
    """The API with `jobs` queued ahead (the worker paused), then the worker draining them."""

    jobs: int
    submit_ms: list[float] = field(default_factory=list)  # client wall time of each queued submit
    get_ms: list[float] = field(default_factory=list)  # GET of a queued job, with the backlog in place
    list_ms: list[float] = field(default_factory=list)  # GET /v1/jobs?status=queued, first page
    api_cpu_ms_per_submit: float = 0.0
    drain_s: float = 0.0  # worker resumed → the last queued job finished

    @property
    def drain_jobs_per_second(self) -> float:
        return self.jobs / self.drain_s if self.drain_s else 0.0


def run_backlog(
    base_url: str,
    uploads: Uploads,
    *,
    jobs: int,
    concurrency: int,
    api_pid: int,
    worker_pid: int,
    on_done: Callable[[], None] = lambda: None,
    probes: int = 200,
) -> BacklogResult:
    """Queue `jobs` jobs with the worker paused, time the API over that backlog, then let it drain."""
    result = BacklogResult(jobs=jobs)
    lock = threading.Lock()
    ids: list[str] = []
    client = _ThreadClients(base_url)

    def submit(i: int) -> None:
        content, headers = uploads.body(i)
        sent = time.perf_counter()
        response = client().post("/v1/jobs", content=content, headers=headers)
        elapsed = (time.perf_counter() - sent) * 1000
        if response.status_code != 202:
            raise RuntimeError(f"a submit was refused: {response.status_code} {response.text}")
        with lock:
            ids.append(response.json()["id"])
            result.submit_ms.append(elapsed)
        on_done()

    _signal_group(worker_pid, signal.SIGSTOP)
    try:
        cpu = tree_cpu_s(api_pid)
        with client, ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(submit, range(jobs)))
        result.api_cpu_ms_per_submit = (tree_cpu_s(api_pid) - cpu) * 1000 / jobs
        with httpx.Client(base_url=base_url, timeout=_JOB_TIMEOUT_S) as probe:
            for k in range(probes):
                sent = time.perf_counter()
                probe.get(f"/v1/jobs/{ids[k * len(ids) // probes]}").raise_for_status()
                result.get_ms.append((time.perf_counter() - sent) * 1000)
                sent = time.perf_counter()
                probe.get("/v1/jobs", params={"status": "queued", "limit": 20}).raise_for_status()
                result.list_ms.append((time.perf_counter() - sent) * 1000)
    finally:
        _signal_group(worker_pid, signal.SIGCONT)
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=_JOB_TIMEOUT_S) as watch:
        # Jobs run about in the order they were queued: once the last is done, only the few the worker
        # children held at once can be left, and they are among the last ones queued.
        deadline = time.monotonic() + max(_JOB_TIMEOUT_S, jobs * 1.0)
        for job_id in [ids[-1], *ids[-4 * concurrency :]]:
            wait_finished(watch, job_id, deadline)
    result.drain_s = time.perf_counter() - started
    return result


def wait_finished(client: httpx.Client, job_id: str, deadline: float) -> None:
    """Poll job `job_id` every 0.2 s until it is finished; RuntimeError at the deadline (monotonic)."""
    while client.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish in time")
        time.sleep(0.2)
