"""`visionq detect` and `visionq models list`, run as users run them, on the real model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from visionq.cli import app
from visionq.models.cache import ModelCache


@pytest.fixture
def data_dir_env(tmp_path: Path, model_cache: ModelCache, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir holding the session's pulled model, named by VISIONQ_DATA_DIR."""
    data_dir = tmp_path / "data"
    shutil.copytree(model_cache.root, data_dir / "models")
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(data_dir))
    return data_dir


def test_json_output_is_one_object_per_image_per_line(
    data_dir_env: Path, sample_paths: dict[str, Path]
) -> None:
    paths = [sample_paths["bus.jpg"], sample_paths["zidane.jpg"]]
    result = CliRunner().invoke(app, ["detect", "--json", *map(str, paths)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in paths]
    assert [(line["width"], line["height"]) for line in lines] == [(810, 1080), (1280, 720)]
    for line in lines:
        assert set(line) == {"image", "width", "height", "detections", "timings_ms"}
        assert set(line["timings_ms"]) == {"decode", "preprocess", "inference", "postprocess"}
    labels = {d["label"] for d in lines[0]["detections"]}
    assert {"person", "bus"} <= labels


def test_options_filter_and_annotate_writes_a_jpeg_per_image(
    data_dir_env: Path, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "annotated"
    args = [
        "detect",
        "--json",
        "--conf",
        "0.5",
        "--iou",
        "0.3",
        "--classes",
        "person",
        "--annotate",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, str(sample_paths["bus.jpg"])])
    assert result.exit_code == 0, result.output
    detections = json.loads(result.stdout)["detections"]
    assert detections and {d["label"] for d in detections} == {"person"}
    assert all(d["confidence"] >= 0.5 for d in detections)
    with Image.open(out / "bus.jpg") as drawn:
        assert (drawn.format, drawn.size) == ("JPEG", (810, 1080))


def test_annotated_images_of_inputs_with_the_same_name_do_not_overwrite_each_other(
    data_dir_env: Path, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(sample_paths["zidane.jpg"], other / "bus.jpg")
    out = tmp_path / "annotated"
    args = ["detect", "--annotate", str(out), str(sample_paths["bus.jpg"]), str(other / "bus.jpg")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    sizes = {}
    for name in ("bus.jpg", "bus-2.jpg"):
        with Image.open(out / name) as drawn:
            sizes[name] = drawn.size
    assert sizes == {"bus.jpg": (810, 1080), "bus-2.jpg": (1280, 720)}


def test_a_bad_image_is_reported_and_the_others_still_run(
    data_dir_env: Path, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    result = CliRunner().invoke(app, ["detect", "--json", str(bad), str(sample_paths["zidane.jpg"])])
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"]["code"] == "not_an_image"
    assert second["image"] == str(sample_paths["zidane.jpg"]) and second["detections"]


def test_an_unknown_class_fails_before_any_image_with_a_clear_message(
    data_dir_env: Path, sample_paths: dict[str, Path]
) -> None:
    result = CliRunner().invoke(app, ["detect", "--classes", "person,unicorn", str(sample_paths["bus.jpg"])])
    assert result.exit_code == 1
    assert "unicorn" in result.stderr
    assert result.stdout == ""


def test_models_list_shows_the_pulled_model(data_dir_env: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    (model,) = (json.loads(line) for line in result.stdout.splitlines())
    assert (model["name"], model["family"], len(model["classes"])) == ("yolov4-tiny", "darknet", 80)
    assert model["input"] == {"width": 416, "height": 416, "preprocess": "resize"}


def test_models_samples_copies_the_verified_sample_photos(
    data_dir_env: Path, sample_paths: dict[str, Path], tmp_path: Path
) -> None:
    # The data dir already holds verified copies (as after a first run), so nothing is downloaded.
    shutil.copytree(sample_paths["bus.jpg"].parent, data_dir_env / "samples")
    dest = tmp_path / "photos"

    result = CliRunner().invoke(app, ["models", "samples", str(dest)])

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir()) == ["bus.jpg", "zidane.jpg"]
    for name in ("bus.jpg", "zidane.jpg"):
        assert (dest / name).read_bytes() == sample_paths[name].read_bytes()
