"""The whole service in real processes: `visionq api` and `visionq worker`, on RabbitMQ + PostgreSQL
and on the embedded SQLite + filesystem broker, with the real model."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import VISIONQ, Service, running_service, wait_finished
from tests.helpers import visionq_env
from visionq.bench.service import STAGES, Uploads, percentile, run_load
from visionq.models.cache import ModelCache

pytestmark = pytest.mark.slow


_DISTRIBUTED = pytest.param("rabbitmq-postgres", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])


_REDIS = pytest.param("redis-postgres", marks=[pytest.mark.redis, pytest.mark.postgres])


@pytest.fixture(params=[_DISTRIBUTED, _REDIS, "embedded"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache) as running:
        yield running


@pytest.fixture(params=[_DISTRIBUTED])
def distributed(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache) as running:
        yield running


def _cli_detect(data_dir: Path, image: Path) -> dict[str, Any]:
    out = subprocess.run(
        [*VISIONQ, "detect", "--json", str(image)],
        env=visionq_env(data_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _assert_same_detections(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [d["label"] for d in got] == [d["label"] for d in expected]
    for g, e in zip(got, expected, strict=True):
        # Thread counts differ between the worker and the CLI; float sums may differ in the last bits.
        assert g["confidence"] == pytest.approx(e["confidence"], abs=1e-3)
        for k in ("x1", "y1", "x2", "y2"):
            assert g["box"][k] == pytest.approx(e["box"][k], abs=0.5)


def test_a_photo_goes_through_the_queue_to_the_same_result_as_visionq_detect(
    service: Service, sample_paths: dict[str, Path]
) -> None:
    bus = sample_paths["bus.jpg"]
    submitted = service.client.post("/v1/jobs", files={"image": ("bus.jpg", bus.read_bytes(), "image/jpeg")})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.headers["location"] == f"/v1/jobs/{job_id}"
    job = wait_finished(service.client, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert f"job {job_id} queued: yolov4-tiny, image/jpeg 810x1080" in service.procs.output("api")
    image = job["image"]
    assert isinstance(image, dict)
    assert (image["width"], image["height"], image["content_type"]) == (810, 1080, "image/jpeg")
    assert image["sha256"] == hashlib.sha256(bus.read_bytes()).hexdigest()
    timings = job["timings_ms"]
    assert isinstance(timings, dict)
    assert {"queue_wait", "decode", "inference", "postprocess", "total"} <= set(timings)
    expected = _cli_detect(service.api_data_dir, bus)
    assert isinstance(job["detections"], list)
    _assert_same_detections(job["detections"], expected["detections"])
    annotated = service.client.get(f"/v1/jobs/{job_id}/annotated")
    assert annotated.status_code == 200
    assert annotated.headers["content-type"] == "image/jpeg"
    assert annotated.content[:2] == b"\xff\xd8"


def test_detect_endpoint_waits_for_the_worker_and_answers_with_the_finished_job(
    service: Service, samples: dict[str, bytes]
) -> None:
    response = service.client.post(
        "/v1/detect",
        files={"image": ("zidane.jpg", samples["zidane.jpg"], "image/jpeg")},
        data={"timeout": "30"},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded"
    assert sorted(d["label"] for d in job["detections"] if d["confidence"] >= 0.4) == ["person", "tie"]


def test_the_worker_machine_pulled_its_own_model_and_shares_no_files(
    distributed: Service, samples: dict[str, bytes]
) -> None:
    service = distributed
    response = service.client.post("/v1/detect", files={"image": ("bus.jpg", samples["bus.jpg"])})
    assert response.json()["status"] == "succeeded"
    assert ModelCache(service.worker_data_dir / "models").has("yolov4-tiny")
    # No image ever reached a data dir: the bytes travel in the database.
    for folder in (service.api_data_dir, service.worker_data_dir):
        assert not [p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]


def test_cancelled_job_never_runs_and_deleted_job_is_gone(
    service: Service, samples: dict[str, bytes]
) -> None:
    # Stop the worker so the job stays queued long enough to cancel it, then start it again.
    worker = next(p for name, p in service.procs.started if name == "worker")
    worker.send_signal(signal.SIGSTOP)
    try:
        job_id = service.client.post("/v1/jobs", files={"image": ("bus.jpg", samples["bus.jpg"])}).json()[
            "id"
        ]
        cancelled = service.client.delete(f"/v1/jobs/{job_id}")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
    finally:
        worker.send_signal(signal.SIGCONT)
    # The worker gets the message and must leave the job alone; a later job proves it is consuming.
    later = service.client.post(
        "/v1/detect", files={"image": ("bus.jpg", samples["bus.jpg"])}, data={"timeout": "30"}
    )
    assert later.json()["status"] == "succeeded"
    job = service.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0
    assert job["detections"] in (None, [])
    assert service.client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert service.client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_the_load_benchmark_counts_every_job_and_reads_latencies_from_the_job_rows(
    service: Service, samples: dict[str, bytes]
) -> None:
    images = [("bus.jpg", samples["bus.jpg"]), ("zidane.jpg", samples["zidane.jpg"])]
    result = run_load(str(service.client.base_url), Uploads(images, unique=True), jobs=6, concurrency=3)
    assert (result.succeeded, result.failed, result.unfinished, result.refused) == (6, 0, 0, 0)
    # Each upload was a photo of its own (stored as such), of the size of the photo it came from.
    stored = service.client.get("/v1/jobs", params={"limit": 6}).json()["jobs"]
    assert len({job["image"]["sha256"] for job in stored}) == 6
    for job in stored:  # the photo plus its numbered comment
        assert any(0 < job["image"]["size_bytes"] - len(data) < 64 for _, data in images), job["image"]
    assert len(result.latency_ms) == 6
    assert set(result.stages_ms) == set(STAGES)
    assert all(len(values) == 6 for values in result.stages_ms.values())
    # Each job's stages lie inside its latency as the client saw it, and none is negative (one clock).
    for i, latency in enumerate(result.latency_ms):
        stages = [result.stages_ms[s][i] for s in STAGES]
        assert all(ms >= -1.0 for ms in stages), dict(zip(STAGES, stages, strict=True))  # µs rounding aside
        assert sum(stages) <= latency + 1.0
        assert result.stages_ms["inference"][i] > 0
    assert result.jobs_per_second > 0
    assert result.client_cpu_s > 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
