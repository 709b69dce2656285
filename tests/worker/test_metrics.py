"""What `run_job` records in the worker's metrics: one count per stored outcome, never one for a job
another delivery finished, the stages of the stored timings, the model's load once per process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.worker.conftest import PARAMS, image_in
from visionq import constants
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.observe.metrics import WorkerMetrics
from visionq.store import JobStatus, JobStore, create_engine_for, migrate
from visionq.worker.runtime import Runtime
from visionq.worker.tasks import run_job

MODEL = constants.DEFAULT_MODEL


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def runtime(tmp_path: Path, model_cache: ModelCache, registry: CollectorRegistry) -> Iterator[Runtime]:
    settings = Settings(_env_file=None, data_dir=tmp_path, broker_url=None, database_url=None)  # type: ignore[call-arg]
    engine = create_engine_for(settings.resolved_database_url)
    migrate(engine)
    yield Runtime(
        settings, store=JobStore(engine), models=model_cache, threads=1, metrics=WorkerMetrics(registry)
    )
    engine.dispose()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _run(runtime: Runtime, data: bytes) -> str:
    job = runtime.store.create(image=image_in(data), model=MODEL, params=PARAMS)
    run_job(runtime, job.id, worker="metrics-test")
    return job.id


def test_each_succeeded_job_counts_once_with_its_stored_stages(
    runtime: Runtime, registry: CollectorRegistry, samples: dict[str, bytes]
) -> None:
    first = _run(runtime, samples["bus.jpg"])
    _run(runtime, samples["zidane.jpg"])
    run_job(runtime, first, worker="metrics-test")  # a second delivery of a finished job: nothing new

    assert _value(registry, "visionq_jobs_succeeded_total", model=MODEL) == 2
    job = runtime.store.get(first)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.timings_ms is not None
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        assert _value(registry, "visionq_job_stage_seconds_count", stage=stage) == 2
    assert _value(registry, "visionq_job_queue_wait_seconds_count") == 2
    assert _value(registry, "visionq_job_latency_seconds_count", status="succeeded") == 2
    # The model loaded once in this process, for the first job.
    assert _value(registry, "visionq_model_load_seconds_count", model=MODEL) == 1
    assert 0 < _value(registry, "visionq_model_load_seconds_sum", model=MODEL) < 60


def test_a_failed_job_counts_by_its_error_code(
    runtime: Runtime, registry: CollectorRegistry, samples: dict[str, bytes]
) -> None:
    _run(runtime, b"%PDF-1.7 not an image at all")
    truncated = _run(runtime, samples["bus.jpg"][: len(samples["bus.jpg"]) // 2])

    job = runtime.store.get(truncated)
    assert job is not None and job.error_code == "corrupt"
    assert _value(registry, "visionq_jobs_failed_total", model=MODEL, code="not_an_image") == 1
    assert _value(registry, "visionq_jobs_failed_total", model=MODEL, code="corrupt") == 1
    assert _value(registry, "visionq_jobs_succeeded_total", model=MODEL) == 0
    assert _value(registry, "visionq_job_latency_seconds_count", status="failed") == 2
