"""`visionq models quantize` and `visionq bench detector` run and print their figures (no speed is
asserted: speed targets live in the benchmark's output, never in tests)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from visionq.cli import app
from visionq.detect import engines
from visionq.models.cache import ModelCache
from visionq.store import create_engine_for
from visionq.store.tables import JobRow
from visionq.system import has_vnni

pytestmark = pytest.mark.slow


@pytest.fixture
def cli_data_dir(
    tmp_path: Path, model_cache: ModelCache, sample_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A data dir of this test's own with the model and the sample photos, the CLI pointed at it."""
    folder = tmp_path / "data"
    shutil.copytree(model_cache.root, folder / "models")
    shutil.copytree(sample_paths["bus.jpg"].parent, folder / "samples")
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(folder))
    monkeypatch.delenv("VISIONQ_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # Rich's tables whole, on one line per row
    return folder


def test_quantize_then_bench_prints_every_contender_and_the_int8_agreement(cli_data_dir: Path) -> None:
    runner = CliRunner()

    quantized = runner.invoke(app, ["models", "quantize"])
    assert quantized.exit_code == 0, quantized.output
    manifest, _ = ModelCache(cli_data_dir / "models").get("yolov4-tiny-int8")
    # By default the weights are 7-bit exactly when this machine's CPU has no VNNI.
    assert ("7-bit weights" in manifest.source) is not has_vnni(), manifest.source

    bench = runner.invoke(app, ["bench", "detector", "--rounds", "1", "--per-round", "2"])
    assert bench.exit_code == 0, bench.output
    for row in (
        "│ pipeline   │ yolov4-tiny      │ onnxruntime │ fp32",
        "│ pipeline   │ yolov4-tiny-int8 │ onnxruntime │ int8",
        "│ pipeline   │ yolov4-tiny      │ openvino    │ fp32",
        "│ pipeline   │ yolov4-tiny-int8 │ openvino    │ int8",
        "│ raw        │ yolov4-tiny      │ onnxruntime │ fp32",
        "│ raw        │ yolov4-tiny-int8 │ openvino    │ int8",
        "│ OpenCV DNN │ yolov4-tiny      │ -           │ fp32",
    ):
        assert row in bench.stdout, row
    assert ("│ openvino    │ bf16" in bench.stdout) is engines.bf16_supported()
    assert "1.00x" in bench.stdout  # the OpenCV row, the reference
    assert "Agreement with fp32 on ONNX Runtime" in bench.stdout
    # The reference against itself: all found, boxes identical.
    assert "│ yolov4-tiny      │ onnxruntime │ fp32      │ 7/7     │ 1.000    │ 0.000" in bench.stdout
    assert "pipeline stages, yolov4-tiny-int8 on openvino int8, mean ms/image: decode" in bench.stdout


def test_bench_service_starts_a_stack_measures_it_and_writes_its_report(
    cli_data_dir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"

    args = ["bench", "service", "--broker", "embedded", "-n", "6", "--concurrency", "2", "--workers", "1"]
    args += ["--backlog", "12"]
    run = CliRunner().invoke(app, [*args, "--report", str(report)])

    assert run.exit_code == 0, run.output
    assert "succeeded 6, failed 0, unfinished 0, refused 0" in run.stdout
    assert "on embedded and sqlite" in run.stdout
    found = json.loads(report.read_text())
    assert found["config"]["broker"] == "embedded" and found["config"]["workers"] == 1
    assert found["counts"]["succeeded"] == 6
    assert found["config"]["models_run"] == ["yolov4-tiny"] and found["config"]["uploads"] == "unique"
    assert set(found["stages_ms"]) == {
        "http_accept",
        "queue_wait",
        "decode",
        "preprocess",
        "inference",
        "postprocess",
        "store",
        "response",
    }
    assert found["stages_ms"]["inference"] > 0
    cpu = found["cpu_ms_per_job"]
    assert cpu["api"] > 0 and cpu["worker"] > 0 and cpu["client"] > 0
    assert cpu["broker"] == cpu["database"] == 0.0  # embedded: no server processes of their own
    assert found["detector"]["img_per_s"] > 0 and found["detector"]["cpu_ms_per_image"] > 0
    assert found["throughput_vs_detector"] > 0 and found["service_cpu_vs_detector"] > 0
    assert found["api_cpu_ms"]["submit"] > 0 and found["api_cpu_ms"]["get_finished_job"] > 0
    assert len(found["rss_mb"]["worker_children"]) == 1
    backlog = found["backlog"]
    assert backlog["jobs"] == 12 and backlog["drain_s"] > 0 and backlog["drain_jobs_per_s"] > 0
    assert backlog["submit_ms"]["p50"] > 0 and backlog["get_queued_job_ms"]["p99"] > 0
    assert "with 12 jobs queued (worker paused)" in run.stdout


@pytest.mark.rabbitmq
@pytest.mark.postgres
def test_bench_reconcile_times_a_backlog_then_its_loss_and_leaves_nothing_behind(
    cli_data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_databases: Callable[[], str],
    rabbitmq_vhosts: Callable[[], str],
) -> None:
    database = postgres_databases()
    monkeypatch.setenv("VISIONQ_DATABASE_URL", database)
    monkeypatch.setenv("VISIONQ_BROKER_URL", rabbitmq_vhosts())

    run = CliRunner().invoke(app, ["bench", "reconcile", "-n", "40"])

    assert run.exit_code == 0, run.output
    assert "Reconciliation over 40 queued jobs" in run.stdout
    assert "(publishes 0)" in run.stdout
    assert "40 jobs published again by 1 reconciliation(s)" in run.stdout
    engine = create_engine_for(database)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(JobRow)).scalar_one() == 0
    engine.dispose()


def test_bench_streams_reads_the_waiting_api_and_times_every_streams_end(cli_data_dir: Path) -> None:
    run = CliRunner().invoke(app, ["bench", "streams", "-n", "30", "--jobs", "3", "--idle", "1"])

    assert run.exit_code == 0, run.output
    assert "30 streams over 3 jobs, on a new stack: api + worker on embedded and sqlite" in run.stdout
    rows = dict(re.findall(r"│ (.+?)\s+│ (.+?)\s+│", run.stdout))
    assert rows["streams that saw the end"] == "30 of 30"
    p50, p95, worst = (
        float(v) for v in re.findall(r"[0-9.]+", rows["job finished → client read it, p50 · p95 · max"])
    )
    assert 0 < p50 <= p95 <= worst
    assert re.fullmatch(r"-?[0-9.]+ KiB", rows["memory per waiting stream"])  # RSS may even shrink a little
    assert re.fullmatch(r"[0-9]+ → [0-9]+", rows["API threads: none waiting → all waiting"])
