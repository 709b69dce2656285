"""The metrics: what a job's end records, the queue depths read at scrape time, and multiprocess mode
summing processes forked from one parent (as a prefork worker's children are) in a folder of tmp_path."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, values

from visionq.errors import DatabaseUnavailable
from visionq.observe.metrics import (
    MULTIPROCESS_ENV,
    ApiMetrics,
    JobCounts,
    WorkerMetrics,
    remove_multiprocess_dir,
    serving_registry,
    use_multiprocess_dir,
)

TIMINGS_MS = {
    "queue_wait": 3.0,
    "decode": 4.5,
    "preprocess": 4.0,
    "inference": 33.0,
    "postprocess": 0.5,
    "total": 46.0,
}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_succeeded_job_counts_once_with_its_latency_and_stages_in_seconds() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.job_succeeded("yolov4-tiny", TIMINGS_MS)

    assert _value(registry, "visionq_jobs_succeeded_total", model="yolov4-tiny") == 1
    assert _value(registry, "visionq_job_latency_seconds_sum", status="succeeded") == pytest.approx(0.046)
    assert _value(registry, "visionq_job_queue_wait_seconds_sum") == pytest.approx(0.003)
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        assert _value(registry, "visionq_job_stage_seconds_count", stage=stage) == 1
        expected = TIMINGS_MS[stage] / 1000
        assert _value(registry, "visionq_job_stage_seconds_sum", stage=stage) == pytest.approx(expected)
    # 33 ms of inference falls in the 50 ms bucket and not in the 25 ms one.
    assert _value(registry, "visionq_job_stage_seconds_bucket", stage="inference", le="0.025") == 0
    assert _value(registry, "visionq_job_stage_seconds_bucket", stage="inference", le="0.05") == 1
    assert _value(registry, "visionq_jobs_failed_total", model="yolov4-tiny", code="corrupt") is None


def test_a_failed_job_counts_by_model_and_code_with_its_latency() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.job_failed("yolov4-tiny", "corrupt", latency_s=0.2)
    metrics.job_failed("yolov4-tiny", "corrupt", latency_s=0.3)
    metrics.job_failed("yolov4-tiny", "timeout", latency_s=301.0)

    assert _value(registry, "visionq_jobs_failed_total", model="yolov4-tiny", code="corrupt") == 2
    assert _value(registry, "visionq_jobs_failed_total", model="yolov4-tiny", code="timeout") == 1
    assert _value(registry, "visionq_job_latency_seconds_count", status="failed") == 3
    assert _value(registry, "visionq_job_latency_seconds_bucket", status="failed", le="300.0") == 2


def test_every_metric_is_visionqs_and_says_what_it_is() -> None:
    api, worker = ApiMetrics(), WorkerMetrics()
    families = [*api.registry.collect(), *worker.registry.collect()]

    assert {f.name for f in families} == {
        "visionq_jobs_submitted",
        "visionq_jobs_succeeded",
        "visionq_jobs_failed",
        "visionq_job_latency_seconds",
        "visionq_job_queue_wait_seconds",
        "visionq_job_stage_seconds",
        "visionq_model_load_seconds",
        "visionq_worker_children",
        "visionq_worker_concurrency",
    }
    assert all(len(f.documentation) > 20 for f in families)


def test_the_queue_depths_are_counted_at_each_scrape() -> None:
    counts: list[Callable[[], Mapping[str, int]]] = [lambda: {"queued": 3, "running": 1}]

    def count() -> Mapping[str, int]:
        return counts[0]()

    metrics = ApiMetrics()
    metrics.count_jobs(count)
    metrics.submitted("yolov4-tiny")

    scraped = generate_latest(metrics.served).decode()
    assert "visionq_jobs_queued 3.0" in scraped and "visionq_jobs_running 1.0" in scraped
    assert 'visionq_jobs_submitted_total{model="yolov4-tiny"} 1.0' in scraped

    counts[0] = lambda: {"queued": 0, "running": 0}
    assert "visionq_jobs_queued 0.0" in generate_latest(metrics.served).decode()


def test_a_count_the_database_refuses_leaves_the_depths_out_and_the_rest_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down() -> Mapping[str, int]:
        raise DatabaseUnavailable("the database is unreachable")

    metrics = ApiMetrics()
    metrics.count_jobs(down)
    metrics.submitted("yolov4-tiny")

    with caplog.at_level(logging.WARNING, logger="visionq.observe.metrics"):
        scraped = generate_latest(metrics.served).decode()

    assert "visionq_jobs_queued" not in scraped and "visionq_jobs_running" not in scraped
    assert 'visionq_jobs_submitted_total{model="yolov4-tiny"} 1.0' in scraped
    assert "jobs not counted: the database is unreachable" in caplog.text


def test_a_bug_in_the_count_is_not_hidden() -> None:
    def broken() -> Mapping[str, int]:
        raise KeyError("status")

    registry = CollectorRegistry()
    registry.register(JobCounts(broken))
    with pytest.raises(KeyError):
        generate_latest(registry)


@pytest.fixture
def multiprocess_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Multiprocess mode over a fresh folder under tmp_path, as `visionq worker --metrics-port` turns
    it on; the environment and prometheus_client's value class are put back afterwards."""
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setenv(MULTIPROCESS_ENV, "")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return use_multiprocess_dir("test")


def test_each_multiprocess_folder_is_fresh_and_empty(multiprocess_dir: Path, tmp_path: Path) -> None:
    second = use_multiprocess_dir("test")

    assert multiprocess_dir.parent == tmp_path and multiprocess_dir.name.startswith("visionq-test-metrics-")
    assert second != multiprocess_dir and not any(second.iterdir())
    remove_multiprocess_dir(second)
    assert not second.exists()


def _child(
    metrics: WorkerMetrics,
    ready: multiprocessing.synchronize.Event,
    leave: multiprocessing.synchronize.Event,
    *,
    says_goodbye: bool,
) -> None:
    """A pool child: ready, two jobs, then it leaves when told (`says_goodbye`: as Celery's children do)."""
    metrics.child_started()
    metrics.job_succeeded("yolov4-tiny", TIMINGS_MS)
    metrics.job_succeeded("yolov4-tiny", TIMINGS_MS)
    ready.set()
    leave.wait(60)
    if says_goodbye:
        metrics.child_stopping()


def test_forked_children_are_summed_and_their_totals_outlive_them(multiprocess_dir: Path) -> None:
    fork = multiprocessing.get_context("fork")
    metrics = WorkerMetrics()  # made in the parent before the fork, as WorkerApp makes it
    metrics.concurrency.set(2)
    leave = fork.Event()
    ready = [fork.Event(), fork.Event()]
    # One child leaves as a pool child does (worker_process_shutdown); the other is SIGKILLed.
    polite = fork.Process(target=_child, args=(metrics, ready[0], leave), kwargs={"says_goodbye": True})
    killed = fork.Process(
        target=_child, args=(metrics, ready[1], fork.Event()), kwargs={"says_goodbye": False}
    )
    for process in (polite, killed):
        process.start()
    try:
        assert all(event.wait(30) for event in ready)
        served = serving_registry(metrics.registry)

        assert _value(served, "visionq_jobs_succeeded_total", model="yolov4-tiny") == 4
        assert _value(served, "visionq_job_stage_seconds_count", stage="inference") == 4
        assert _value(served, "visionq_worker_children") == 2
        assert _value(served, "visionq_worker_concurrency") == 2
    finally:
        leave.set()
        killed.kill()
        polite.join(30)
        killed.join(30)
    assert polite.exitcode == 0 and killed.exitcode == -9

    served = serving_registry(metrics.registry)
    assert _value(served, "visionq_jobs_succeeded_total", model="yolov4-tiny") == 4
    assert _value(served, "visionq_worker_children") == 0


def test_a_dead_processs_folder_is_removed_and_a_live_ones_kept(
    multiprocess_dir: Path, tmp_path: Path
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = tmp_path / f"visionq-worker-metrics-{int(dead.stdout)}-x1y2"
    orphan.mkdir()
    (orphan / "counter_1.db").write_bytes(b"")

    use_multiprocess_dir("test")

    assert not orphan.exists() and multiprocess_dir.exists()  # this process's own is alive


def test_a_sigterm_the_server_re_raises_still_removes_the_folder(tmp_path: Path) -> None:
    # uvicorn restores the handler it found and raises the SIGTERM it shut down on: the process dies of
    # it, and no `finally` runs.
    script = (
        "import signal, time\n"
        "from visionq.observe.metrics import multiprocess_folder\n"
        "with multiprocess_folder('api') as path:\n"
        "    print(path, flush=True)\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == -signal.SIGTERM, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path and not folder.exists()
