"""`visionq models quantize` and `visionq bench detector` run and print their figures (no speed is
asserted: speed targets live in the benchmark's output, never in tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionq.cli import app
from visionq.models.cache import ModelCache
from visionq.system import has_vnni

pytestmark = pytest.mark.slow


def test_quantize_then_bench_prints_every_contender_and_the_int8_agreement(
    tmp_path: Path, model_cache: ModelCache, sample_paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(model_cache.root, data_dir / "models")
    shutil.copytree(sample_paths["bus.jpg"].parent, data_dir / "samples")
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    quantized = runner.invoke(app, ["models", "quantize"])
    assert quantized.exit_code == 0, quantized.output
    manifest, _ = ModelCache(data_dir / "models").get("yolov4-tiny-int8")
    # By default the weights are 7-bit exactly when this machine's CPU has no VNNI.
    assert ("7-bit weights" in manifest.source) is not has_vnni(), manifest.source

    bench = runner.invoke(app, ["bench", "detector", "--rounds", "1", "--per-round", "2"])
    assert bench.exit_code == 0, bench.output
    for contender in (
        "visionq pipeline, yolov4-tiny ",
        "visionq pipeline, yolov4-tiny-int8",
        "ONNX Runtime session alone, yolov4-tiny ",
        "ONNX Runtime session alone, yolov4-tiny-int8",
        "OpenCV DNN pipeline",
    ):
        assert contender in bench.stdout
    assert "1.00x" in bench.stdout  # the OpenCV row, the reference
    assert "yolov4-tiny-int8 vs yolov4-tiny" in bench.stdout
    assert "found (same label, IoU >= 0.5)" in bench.stdout
