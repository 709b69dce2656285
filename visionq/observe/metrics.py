"""visionq's Prometheus metrics, each defined once here with its help text and buckets, and how processes
that fork or spawn (a worker's prefork children, uvicorn's `--workers`) serve them as one.

Each process records into the metric objects of an `ApiMetrics` or a `WorkerMetrics`, registered in the
registry it was given. Where several processes do the counting, prometheus_client's multiprocess mode
keeps every process's values in files of one folder (`use_multiprocess_dir`, set before any fork or
spawn), and `serving_registry` sums them there at scrape time, so it does not matter which process
answers the scrape or which child ran a job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from visionq.errors import VisionqError

logger = logging.getLogger(__name__)

# prometheus_client's own variable: its multiprocess mode is on in a process that has it.
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Created → result stored. ~50 ms for a job a free worker takes at once (README, Performance), seconds
# to minutes behind a backlog, and up to a few task time limits (300 s each) for a job whose worker
# died: the buckets span the three, finest where a healthy service lives.
LATENCY_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
# Created → claimed: ~1-5 ms when a worker is idle, the whole backlog's time when none is; a histogram
# of its own, since the processing stages live three orders of magnitude lower.
QUEUE_WAIT_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
)
# Decode, preprocess, inference, postprocess of one image on a CPU: 0.5-50 ms each for yolov4-tiny
# (inference the largest), up to seconds for a 50-megapixel photo or a big imported model.
STAGE_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Building a model's inference session: ~0.1-1 s for yolov4-tiny, more for a big model or OpenVINO's
# compile, and never past the 60 s a prefork child gets to start (worker.app.PROCESS_INIT_TIMEOUT_S).
MODEL_LOAD_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The stages of a result's `timings_ms` observed in STAGE_SECONDS (queue_wait and total have their own).
STAGES: Final = ("decode", "preprocess", "inference", "postprocess")


class ApiMetrics:
    """What an API process counts, registered in `registry` (a fresh one by default); `served` is what
    its /metrics serves (`serving_registry`), the queue depths included once `count_jobs` is called."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.served = serving_registry(self.registry)
        self.jobs_submitted = Counter(
            "visionq_jobs_submitted",
            "Jobs stored and published, by model (an Idempotency-Key's replay makes no new job).",
            ["model"],
            registry=self.registry,
        )

    def submitted(self, model: str) -> None:
        """A job of `model` was stored and its message published."""
        self.jobs_submitted.labels(model=model).inc()

    def count_jobs(self, count: Callable[[], Mapping[str, int]]) -> None:
        """Serve visionq_jobs_queued and visionq_jobs_running, from `count()` at each scrape (`JobCounts`)."""
        self.served.register(JobCounts(count))


class WorkerMetrics:
    """What a worker process counts, registered in `registry` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = CollectorRegistry() if registry is None else registry
        self.jobs_succeeded = Counter(
            "visionq_jobs_succeeded",
            "Jobs whose detections a worker stored, by model.",
            ["model"],
            registry=registry,
        )
        self.jobs_failed = Counter(
            "visionq_jobs_failed",
            "Jobs a worker failed, by model and error code (visionq.errors.ErrorCode).",
            ["model", "code"],
            registry=registry,
        )
        self.job_latency = Histogram(
            "visionq_job_latency_seconds",
            "A job's created_at to its result stored (end to end), by the status it ended in.",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "visionq_job_queue_wait_seconds",
            "A succeeded job's created_at to the claim of the delivery that ran it.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "visionq_job_stage_seconds",
            "Time a succeeded job spent in each stage of its detection: decode, preprocess, inference, "
            "postprocess.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.model_load = Histogram(
            "visionq_model_load_seconds",
            "Time to load a model (its inference session) in a worker process, by model.",
            ["model"],
            buckets=MODEL_LOAD_BUCKETS,
            registry=registry,
        )
        # livesum: each process counts itself once; a process gone takes its 1 with it.
        self.children = Gauge(
            "visionq_worker_children",
            "Worker processes started and taking jobs (prefork children, each past its model's warm-up).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.concurrency = Gauge(
            "visionq_worker_concurrency",
            "Worker processes the pool is configured to run (compare with visionq_worker_children).",
            registry=registry,
            multiprocess_mode="max",
        )

    def job_succeeded(self, model: str, timings_ms: Mapping[str, float]) -> None:
        """A job's detections were stored, with the result's `timings_ms` (README: a finished job)."""
        self.jobs_succeeded.labels(model=model).inc()
        if "total" in timings_ms:
            self.job_latency.labels(status="succeeded").observe(timings_ms["total"] / 1000)
        if "queue_wait" in timings_ms:
            self.queue_wait.observe(timings_ms["queue_wait"] / 1000)
        for stage in STAGES:
            if stage in timings_ms:
                self.stage_seconds.labels(stage=stage).observe(timings_ms[stage] / 1000)

    def job_failed(self, model: str, code: str, *, latency_s: float | None = None) -> None:
        """A job's failure was stored, `latency_s` after it was created."""
        self.jobs_failed.labels(model=model, code=code).inc()
        if latency_s is not None:
            self.job_latency.labels(status="failed").observe(max(0.0, latency_s))

    def model_loaded(self, model: str, seconds: float) -> None:
        self.model_load.labels(model=model).observe(seconds)

    def child_started(self) -> None:
        """This process (a prefork child, or a solo worker) is ready for jobs."""
        self.children.inc()

    def child_stopping(self) -> None:
        """This process leaves the pool: its live gauges go with it (in multiprocess mode, its files)."""
        self.children.dec()
        path = multiprocess_dir()
        if path is not None:
            _forget(os.getpid(), path)


class JobCounts(Collector):
    """visionq_jobs_queued and visionq_jobs_running, counted when scraped: `count()` gives jobs by status.

    The job table is the truth about the queue (a broker's message count includes retries waiting and
    misses jobs whose message was lost). A count that fails (the database is down) leaves both gauges
    out of that scrape, and the rest of it is served: alert on `absent(visionq_jobs_queued)`.
    """

    def __init__(self, count: Callable[[], Mapping[str, int]]) -> None:
        self._count = count

    def collect(self) -> Iterable[Metric]:
        try:
            counts = self._count()
        except VisionqError as exc:
            logger.warning("metrics: jobs not counted: %s", exc)
            return []
        return [
            GaugeMetricFamily(
                "visionq_jobs_queued", "Jobs waiting for a worker.", value=counts.get("queued", 0)
            ),
            GaugeMetricFamily(
                "visionq_jobs_running",
                "Jobs a worker has claimed and not finished.",
                value=counts.get("running", 0),
            ),
        ]


def multiprocess_dir() -> Path | None:
    """The folder this process records its metrics in, when multiprocess mode is on."""
    path = os.environ.get(MULTIPROCESS_ENV)
    return Path(path) if path else None


@contextmanager
def multiprocess_folder(kind: str) -> Iterator[Path]:
    """`use_multiprocess_dir` for as long as a command runs; the folder is removed when it ends, by a
    SIGTERM too (uvicorn re-raises the one it shut down on, and the process dies of it: no `finally`)."""
    path = use_multiprocess_dir(kind)
    previous = signal.getsignal(signal.SIGTERM)
    restore = signal.SIG_DFL if previous is None else previous

    def remove_then_end(signum: int, _frame: FrameType | None) -> None:
        remove_multiprocess_dir(path)
        signal.signal(signum, restore)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, remove_then_end)
    try:
        yield path
    finally:
        signal.signal(signal.SIGTERM, restore)
        remove_multiprocess_dir(path)


def use_multiprocess_dir(kind: str) -> Path:
    """Turn multiprocess mode on over a fresh, empty folder, for this process and every process it forks
    or spawns from now on (they inherit the environment); returns the folder, for the caller to remove.

    A folder of its own per `visionq api` or `visionq worker`, never one inherited from the environment:
    two services counting into one folder would each serve the other's jobs as their own. The folders
    of processes that died without removing theirs (SIGKILL) are removed first.
    """
    _remove_orphans()
    path = Path(tempfile.mkdtemp(prefix=f"visionq-{kind}-metrics-{os.getpid()}-"))
    os.environ[MULTIPROCESS_ENV] = str(path)
    # prometheus_client chooses how it keeps values when it is first imported; this process may have
    # imported it before the folder was known (the metric objects are made later, with the new choice).
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


def serving_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What a process's /metrics serves: in multiprocess mode the values of every process of the folder,
    summed; otherwise this process's `own` registry."""
    path = multiprocess_dir()
    if path is None:
        return own
    registry = CollectorRegistry()
    registry.register(_LiveProcesses(path))
    return registry


class _LiveProcesses(MultiProcessCollector):
    """prometheus_client's MultiProcessCollector, first forgetting the live gauges of the processes that
    died without a word (a SIGKILL, the kernel's OOM killer): `child_stopping` never ran in those."""

    def __init__(self, path: Path) -> None:
        super().__init__(None, str(path))  # type: ignore[no-untyped-call]
        self._folder = path

    def collect(self) -> Iterable[Metric]:
        for file in self._folder.glob("gauge_live*_*.db"):
            match = _PID.search(file.name)
            if match is not None and not _alive(int(match.group(1))):
                _forget(int(match.group(1)), self._folder)
        metrics: Iterable[Metric] = super().collect()  # type: ignore[no-untyped-call]
        return metrics


_PID = re.compile(r"_(\d+)\.db$")


def _forget(pid: int, folder: Path) -> None:
    """Remove process `pid`'s live gauges from the folder (its counters and histograms stay: totals)."""
    mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: the pid was reused, our process is gone
    return True


def start_metrics_server(host: str, port: int) -> None:
    """Serve this process's `serving_registry` over HTTP on host:port, from a daemon thread (the worker's
    main process: every child of the multiprocess folder, summed)."""
    start_http_server(port, addr=host, registry=serving_registry(CollectorRegistry()))


def remove_multiprocess_dir(path: Path) -> None:
    """Remove a folder of `use_multiprocess_dir` (at the process's exit)."""
    shutil.rmtree(path, ignore_errors=True)


_FOLDER = re.compile(r"^visionq-[a-z]+-metrics-(\d+)-")


def _remove_orphans() -> None:
    for folder in Path(tempfile.gettempdir()).glob("visionq-*-metrics-*"):
        match = _FOLDER.match(folder.name)
        if match is not None and not _alive(int(match.group(1))):
            remove_multiprocess_dir(folder)
