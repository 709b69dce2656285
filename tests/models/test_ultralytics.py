"""Importing Ultralytics ONNX exports (graphs the tests build): the layout, the input, the class names
as their author wrote them, and a clear refusal, saying how to re-export, of what visionq cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.exports import (
    CANDIDATES,
    CLASSES,
    NET,
    PHOTO,
    end2end_output,
    expected,
    export,
    ultralytics_metadata,
    yolov5_output,
    yolov8_output,
)
from tests.helpers import load_detector
from visionq.detect.manifest import Manifest
from visionq.errors import InvalidRequest, ModelError
from visionq.models.cache import MANIFEST_FILE, ModelCache

REEXPORT = "yolo export model=best.pt format=onnx"


@pytest.fixture
def cache(tmp_path: Path) -> ModelCache:
    return ModelCache(tmp_path / "models")


def import_export(cache: ModelCache, model: onnx.ModelProto, filename: str = "yolo.onnx") -> Manifest:
    path = cache.root.parent / filename
    path.write_bytes(model.SerializeToString())
    return cache.import_onnx(path)


@pytest.mark.parametrize(
    ("output", "family"),
    [
        (yolov8_output(CANDIDATES), "yolov8"),
        (yolov5_output(CANDIDATES), "yolov5"),
        (end2end_output(CANDIDATES), "end2end"),
    ],
)
def test_the_layout_is_recognised_and_recorded_in_the_manifest(
    cache: ModelCache, output: np.ndarray, family: str
) -> None:
    manifest = import_export(cache, export(output), "YOLO-Export.onnx")

    assert manifest.name == "yolo-export"
    assert manifest.family == family
    assert (manifest.input.width, manifest.input.height, manifest.input.preprocess) == (NET, NET, "letterbox")
    assert manifest.classes == CLASSES
    assert manifest.heads == []
    assert manifest.source == "file:YOLO-Export.onnx"
    on_disk = json.loads((cache.root / "yolo-export" / MANIFEST_FILE).read_text())
    assert on_disk["family"] == family
    assert cache.get("yolo-export")[0].family == family


@pytest.mark.parametrize("family", ["yolov8", "yolov5", "end2end"])
def test_an_imported_export_runs_from_the_cache(cache: ModelCache, family: str) -> None:
    outputs = {"yolov8": yolov8_output, "yolov5": yolov5_output, "end2end": end2end_output}
    import_export(cache, export(outputs[family](CANDIDATES)), f"{family}.onnx")

    detections = load_detector(cache, family, threads=1).detect(PHOTO).detections

    # NMS drops the shifted duplicate of the person; an end-to-end head already chose its boxes.
    assert detections == (expected(0, 1, 2, 3, 5) if family == "end2end" else expected(0, 2, 3, 5))


def test_a_models_own_class_names_are_kept_as_its_author_wrote_them(cache: ModelCache) -> None:
    # Darknet's VOC-era spellings are mapped only in Darknet's own coco.names: here they are the
    # author's names (a sofa factory's model), and a filter on "couch" would find nothing.
    names = str(["sofa", "motorbike", "widget"])
    manifest = import_export(
        cache, export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(names=names))
    )

    assert manifest.classes == ["sofa", "motorbike", "widget"]


@pytest.mark.parametrize(
    "flag",
    [{"end2end": "True"}, {"args": "{'batch': 1, 'nms': True, 'half': False}"}],
    ids=["end2end-metadata", "exported-with-nms"],
)
def test_an_end_to_end_export_is_known_by_its_metadata_even_with_one_class(
    cache: ModelCache, flag: dict[str, str]
) -> None:
    # With one class, (1, N, 6) is also YOLOv5's raw layout (5 + 1): the metadata decides.
    one_class = [c for c in CANDIDATES if c.class_id == 0]
    meta = ultralytics_metadata(names=str(["person"]), **flag)

    manifest = import_export(cache, export(end2end_output(one_class), metadata=meta))

    assert manifest.family == "end2end"


def test_a_one_class_six_column_export_without_the_end_to_end_flag_is_yolov5(cache: ModelCache) -> None:
    rows = [c for c in CANDIDATES if c.class_id == 0] * 4  # (1, 14, 6): 14 is no 4 + 1 classes

    manifest = import_export(
        cache, export(yolov5_output(rows, nc=1), metadata=ultralytics_metadata(names=str(["person"])))
    )

    assert manifest.family == "yolov5"


def test_an_end_to_end_flag_on_another_layout_is_refused(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(end2end="True"))

    with pytest.raises(ModelError, match=f"end-to-end export must output.*{REEXPORT}"):
        import_export(cache, model)


def test_symbolic_input_sizes_come_from_the_imgsz_metadata_as_height_then_width(cache: ModelCache) -> None:
    model = export(
        yolov8_output(CANDIDATES),
        metadata=ultralytics_metadata(imgsz="[48, 64]"),
        input_dims=("batch", 3, "height", "width"),
    )

    manifest = import_export(cache, model)

    assert (manifest.input.width, manifest.input.height) == (64, 48)


def test_names_may_also_be_a_list(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(names=str([" a", "b ", "c"])))

    assert import_export(cache, model).classes == ["a", "b", "c"]


def test_an_export_for_another_task_is_refused_with_how_to_re_export(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(task="segment"))

    with pytest.raises(ModelError, match=f"task 'segment'.*{REEXPORT}"):
        import_export(cache, model)
    assert not cache.has("yolo")


@pytest.mark.parametrize("shape", [(1, 10, 10), (1, 4 + 3 + 1, 10), (1, 10, 5 + 3 + 1)])
def test_an_output_shape_of_no_known_layout_is_refused_with_how_to_re_export(
    cache: ModelCache, shape: tuple[int, int, int]
) -> None:
    with pytest.raises(ModelError, match=f"none of the layouts visionq reads.*{REEXPORT}"):
        import_export(cache, export(np.zeros(shape, np.float32)))


def test_an_output_that_is_not_three_dimensional_is_refused(cache: ModelCache) -> None:
    with pytest.raises(ModelError, match=f"unexpected shapes.*{REEXPORT}"):
        import_export(cache, export(np.zeros((1, 7, 4, 2), np.float32)))


def test_an_export_with_a_batch_of_several_images_is_refused(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), input_dims=(4, 3, NET, NET))

    with pytest.raises(ModelError, match=f"one RGB image at a time.*{REEXPORT}.*batch=1"):
        import_export(cache, model)


def test_an_export_without_names_metadata_is_refused(cache: ModelCache) -> None:
    meta = ultralytics_metadata()
    del meta["names"]

    with pytest.raises(ModelError, match=f"no 'names' metadata.*{REEXPORT}"):
        import_export(cache, export(yolov8_output(CANDIDATES), metadata=meta))


def test_unreadable_names_metadata_is_refused(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(names="{0: 'person'"))

    with pytest.raises(ModelError, match=f"'names' metadata is not readable.*{REEXPORT}"):
        import_export(cache, model)


def test_a_file_that_is_not_onnx_is_refused(cache: ModelCache, tmp_path: Path) -> None:
    path = tmp_path / "photo.onnx"
    path.write_bytes(PHOTO)

    with pytest.raises(ModelError, match="is not an ONNX model"):
        cache.import_onnx(path)
    assert cache.list() == []


def test_a_missing_file_is_a_model_error(cache: ModelCache, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        cache.import_onnx(tmp_path / "nowhere.onnx")


@pytest.mark.parametrize(
    ("filename", "name"),
    [("yolo v8.onnx", None), ("yolo.onnx", "../escape"), ("yolo.onnx", "x" * 65), ("yolo.onnx", "Yolo")],
)
def test_an_invalid_model_name_is_a_request_error(
    cache: ModelCache, tmp_path: Path, filename: str, name: str | None
) -> None:
    path = tmp_path / filename
    path.write_bytes(export(yolov8_output(CANDIDATES)).SerializeToString())

    with pytest.raises(InvalidRequest, match="invalid model name"):
        cache.import_onnx(path, name=name)
