"""Metrics and JSON logs of the real processes: a worker's /metrics sums its prefork children, the API's
sums uvicorn's workers, Flower serves its own, and the JSON log lines name their jobs and leak nothing."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.stack import VISIONQ, Service, free_port, processes, running_service, wait_finished, wait_ready
from tests.helpers import visionq_env, wait_until
from visionq import constants
from visionq.models.cache import ModelCache

pytestmark = pytest.mark.slow

KEY = "observe-key-0123456789abcdef"
JOBS = 6

_DISTRIBUTED = pytest.param("rabbitmq-postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])


def scrape(url: str, **headers: str) -> dict[str, float]:
    """Every sample of a /metrics answer, by name and labels summed away: {name: total}."""
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log as a JSON object; fails on the first line that is not one."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            try:
                entries.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a log line that is not JSON: {line!r}")
    return entries


@pytest.fixture(params=["embedded", _DISTRIBUTED])
def observed(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache
) -> Iterator[tuple[Service, str]]:
    """api + a worker of 2 children serving its metrics, API keys on, JSON logs; the worker's /metrics URL."""
    port = free_port()
    with running_service(
        request,
        tmp_path,
        model_cache,
        concurrency=2,
        worker_args=["--metrics-port", str(port)],
        api_keys=KEY,
        log_format="json",
    ) as service:
        service.client.headers["Authorization"] = f"Bearer {KEY}"
        yield service, f"http://127.0.0.1:{port}/metrics"


def test_a_worker_of_two_children_serves_every_job_they_ran_and_the_logs_name_each_job(
    observed: tuple[Service, str], samples: dict[str, bytes]
) -> None:
    service, worker_metrics = observed
    images = [samples["bus.jpg"], samples["zidane.jpg"]] * (JOBS // 2)

    def submit(image: bytes) -> str:
        response = service.client.post("/v1/jobs", files={"image": ("photo.jpg", image, "image/jpeg")})
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    with ThreadPoolExecutor(JOBS) as pool:
        ids = list(pool.map(submit, images))
    for job_id in ids:
        assert wait_finished(service.client, job_id)["status"] == "succeeded"

    # The worker's main process serves the values its two children recorded, summed.
    def counted_all() -> dict[str, float] | None:
        scraped = scrape(worker_metrics)
        return scraped if scraped.get("visionq_jobs_succeeded_total") == JOBS else None

    worker = wait_until(
        counted_all, timeout_s=10, what="the worker's metrics count every job", interval_s=0.2
    )
    assert worker["visionq_worker_children"] == 2 and worker["visionq_worker_concurrency"] == 2
    assert worker["visionq_model_load_seconds_count"] == 2  # once in each child
    assert worker["visionq_job_latency_seconds_count"] == JOBS
    assert worker["visionq_job_queue_wait_seconds_count"] == JOBS
    assert worker["visionq_job_stage_seconds_count"] == 4 * JOBS  # decode, preprocess, inference, postprocess
    assert worker.get("visionq_jobs_failed_total", 0) == 0

    base = str(service.client.base_url)
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401  # keys are on, metrics not public
    api = scrape(f"{base}/metrics", Authorization=f"Bearer {KEY}")
    assert api["visionq_jobs_submitted_total"] == JOBS
    assert (api["visionq_jobs_queued"], api["visionq_jobs_running"]) == (0, 0)

    api_log, worker_log = service.procs.output("api"), service.procs.output("worker")
    api_lines, worker_lines = json_lines(api_log), json_lines(worker_log)
    for job_id in ids:
        about = [e["message"] for e in api_lines if e.get("job_id") == job_id]
        assert any(m.startswith(f"job {job_id} queued: {constants.DEFAULT_MODEL}") for m in about), about
        about = [e["message"] for e in worker_lines if e.get("job_id") == job_id]
        assert any(m.startswith(f"job {job_id} succeeded") for m in about), about
    # Two children wrote the worker's lines about jobs, besides its main process.
    assert len({e["pid"] for e in worker_lines if "job_id" in e}) == 2
    # No key and no image bytes, in any spelling, in any line.
    for log in (api_log, worker_log):
        assert KEY not in log
        for image in samples.values():
            chunk = image[len(image) // 2 : len(image) // 2 + 48]
            for spelled in (repr(chunk)[2:-1], chunk.hex(), base64.b64encode(chunk).decode()):
                assert spelled not in log
        assert max(len(line) for line in log.splitlines()) < 2000


def test_the_api_sums_its_uvicorn_workers(
    tmp_path: Path, model_cache: ModelCache, samples: dict[str, bytes]
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(model_cache.root, data_dir / "models")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    submits = 12
    with processes(tmp_path / "logs") as procs:
        args = [*VISIONQ, "api", "--port", str(port), "--workers", "2"]
        procs.start("api", args, visionq_env(data_dir, log_format="json"))
        wait_ready(base, procs)

        def submit(_: int) -> None:
            # A connection each: the kernel hands each to whichever process accepts first.
            files = {"image": ("bus.jpg", samples["bus.jpg"], "image/jpeg")}
            assert httpx.post(f"{base}/v1/jobs", files=files, timeout=30).status_code == 202

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(submit, range(submits)))
        # Whichever process answers, it counts every process's submits (no worker: they stay queued).
        for _ in range(6):
            scraped = scrape(f"{base}/metrics")
            assert scraped["visionq_jobs_submitted_total"] == submits
            assert scraped["visionq_jobs_queued"] == submits
        queued_by = {e["pid"] for e in json_lines(procs.output("api")) if " queued: " in e["message"]}
    assert len(queued_by) == 2, "both uvicorn workers should have taken submits"


def test_flower_serves_its_own_metrics_without_its_basic_auth(tmp_path: Path) -> None:
    port = free_port()
    env = visionq_env(tmp_path / "data", flower_basic_auth="ops:s3cret", log_format="json")
    with processes(tmp_path / "logs") as procs:
        procs.start("flower", [*VISIONQ, "flower", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"

        def answers() -> httpx.Response | None:
            try:
                return httpx.get(f"{base}/metrics", timeout=5)
            except httpx.HTTPError:
                return None

        metrics = wait_until(answers, timeout_s=60, what="Flower answers", interval_s=0.5)
        assert metrics.status_code == 200
        assert "# HELP flower_events_total" in metrics.text and "flower_worker_online" in metrics.text
        assert httpx.get(base, timeout=5).status_code == 401  # the rest of Flower keeps its basic auth
        assert httpx.get(base, auth=("ops", "s3cret"), timeout=5).status_code == 200
        lines = json_lines(procs.output("flower"))
    assert lines and all({"ts", "level", "logger", "message"} <= set(e) for e in lines)
    assert not any("s3cret" in e["message"] for e in lines)
