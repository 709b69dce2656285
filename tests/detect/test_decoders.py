"""Decoding raw outputs: Ultralytics exports end to end through the cache and detector, NMS, Darknet heads."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from visionq.detect.decoders import DarknetDecoder, DarknetHead, nms
from visionq.detect.detector import Detector
from visionq.detect.types import Box, Detection
from visionq.errors import InvalidRequest, ModelError
from visionq.models.cache import MANIFEST_FILE, ModelCache
from visionq.models.manifest import Manifest

FloatArray = npt.NDArray[np.float32]

NET = 64  # the exports' input: 1 x 3 x 64 x 64
NAMES = "{0: 'person', 1: 'car', 2: 'motorbike'}"  # as Ultralytics writes it; `motorbike` is Darknet's
CLASSES = ["person", "car", "motorcycle"]
PHOTO_W, PHOTO_H = 320, 240

# The letterbox geometry, worked out here rather than taken from visionq: the 320x240 photo shrinks by
# r = 0.2 to 64x48 and sits between 8 rows of padding above and below.
RATIO = min(NET / PHOTO_W, NET / PHOTO_H)
PAD_X = (NET - PHOTO_W * RATIO) / 2
PAD_Y = (NET - PHOTO_H * RATIO) / 2


def test_the_letterbox_geometry_the_expectations_rest_on() -> None:
    assert (RATIO, PAD_X, PAD_Y) == (0.2, 0.0, 8.0)


@dataclass(frozen=True)
class Candidate:
    """One anchor's prediction: a box (cx, cy, w, h in network pixels), its class and score.

    For the YOLOv5 layout the score is split into objectness x class probability.
    """

    cx: float
    cy: float
    w: float
    h: float
    class_id: int
    score: float
    objectness: float
    runner_up: float = 0.0  # the score of the next class, which must lose the argmax

    @property
    def class_prob(self) -> float:
        return self.score / self.objectness


CANDIDATES = [
    Candidate(32, 32, 20, 10, 0, 0.9, objectness=0.9),
    # The same person shifted by 1 pixel (IoU 0.905): suppressed by the one above.
    Candidate(33, 32, 20, 10, 0, 0.8, objectness=1.0),
    # A car exactly on the person: another class, so NMS keeps it.
    Candidate(32, 32, 20, 10, 1, 0.7, objectness=0.875, runner_up=0.3),
    Candidate(10, 20, 8, 6, 2, 0.6, objectness=0.75),
    # Below the default threshold of 0.25.
    Candidate(50, 50, 10, 10, 1, 0.1, objectness=0.5),
    # Reaching into the top padding (y1 = 6 < 8): clipped to the photo's top edge.
    Candidate(48, 12, 8, 12, 0, 0.5, objectness=0.625),
]
EMPTY_ANCHORS = 2  # all-zero predictions, as most anchors of a real export are


def _clip(value: float, high: int) -> float:
    return round(min(max(value, 0.0), high), 1)


def original_box(c: Candidate) -> Box:
    """The candidate's box in photo pixels, from the geometry above, clipped to the photo."""
    x1, x2 = ((c.cx + side * c.w / 2 - PAD_X) / RATIO for side in (-1, 1))
    y1, y2 = ((c.cy + side * c.h / 2 - PAD_Y) / RATIO for side in (-1, 1))
    return Box(_clip(x1, PHOTO_W), _clip(y1, PHOTO_H), _clip(x2, PHOTO_W), _clip(y2, PHOTO_H))


def expected(*indices: int) -> list[Detection]:
    return [
        Detection(
            label=CLASSES[c.class_id], class_id=c.class_id, confidence=round(c.score, 4), box=original_box(c)
        )
        for c in (CANDIDATES[i] for i in indices)
    ]


def yolov8_output(candidates: Sequence[Candidate], nc: int = 3) -> FloatArray:
    """(1, 4 + nc, N): per column cx, cy, w, h, then one score per class."""
    out = np.zeros((1, 4 + nc, len(candidates) + EMPTY_ANCHORS), np.float32)
    for i, c in enumerate(candidates):
        out[0, :4, i] = (c.cx, c.cy, c.w, c.h)
        out[0, 4 + c.class_id, i] = c.score
        out[0, 4 + (c.class_id + 1) % nc, i] = c.runner_up
    return out


def yolov5_output(candidates: Sequence[Candidate], nc: int = 3) -> FloatArray:
    """(1, N, 5 + nc): per row cx, cy, w, h, objectness, then one probability per class."""
    out = np.zeros((1, len(candidates) + EMPTY_ANCHORS, 5 + nc), np.float32)
    for i, c in enumerate(candidates):
        out[0, i, :5] = (c.cx, c.cy, c.w, c.h, c.objectness)
        out[0, i, 5 + c.class_id] = c.class_prob
        out[0, i, 5 + (c.class_id + 1) % nc] = c.runner_up
    return out


def ultralytics_metadata(**overrides: str) -> dict[str, str]:
    meta = {
        "description": "Ultralytics YOLO model",
        "author": "Ultralytics",
        "task": "detect",
        "batch": "1",
        "stride": "32",
        "imgsz": f"[{NET}, {NET}]",
        "names": NAMES,
    }
    meta.update(overrides)
    return meta


def export(
    output: FloatArray,
    *,
    metadata: dict[str, str] | None = None,
    input_dims: Sequence[int | str] = (1, 3, NET, NET),
) -> onnx.ModelProto:
    """A graph in the shape of an Ultralytics export whose output is `output`, whatever the image.

    output0 = output + 0 * mean(images): the input stays connected, so ONNX Runtime runs a real graph.
    """
    nodes = [
        helper.make_node("Constant", [], ["table"], value=numpy_helper.from_array(output, "table")),
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),  # a scalar: broadcasts anywhere
        helper.make_node(
            "Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, np.float32), "zero")
        ),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pytorch")
    model.ir_version = 8
    helper.set_model_props(model, ultralytics_metadata() if metadata is None else metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def photo_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (PHOTO_H, PHOTO_W, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


PHOTO = photo_png()


@pytest.fixture
def cache(tmp_path: Path) -> ModelCache:
    return ModelCache(tmp_path / "models")


def import_export(cache: ModelCache, model: onnx.ModelProto, filename: str = "yolo.onnx") -> Manifest:
    path = cache.root.parent / filename
    path.write_bytes(model.SerializeToString())
    return cache.import_onnx(path)


LAYOUTS = {"yolov8": yolov8_output, "yolov5": yolov5_output}


@pytest.fixture(params=sorted(LAYOUTS))
def family(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def detector(cache: ModelCache, family: str) -> Detector:
    """The candidates above as an export of `family`, imported into the cache and loaded from it."""
    import_export(cache, export(LAYOUTS[family](CANDIDATES)), f"{family}n.onnx")
    return Detector.from_cache(cache, f"{family}n", threads=1)


# --- Ultralytics exports end to end ----------------------------------------------------------------


def test_boxes_map_back_through_the_letterbox_to_photo_pixels(detector: Detector) -> None:
    result = detector.detect(PHOTO)

    assert (result.width, result.height) == (PHOTO_W, PHOTO_H)
    assert result.detections == expected(0, 2, 3, 5)


def test_the_expected_boxes_are_the_ones_worked_out_by_hand() -> None:
    assert [d.box for d in expected(0, 2, 3, 5)] == [
        Box(110.0, 95.0, 210.0, 145.0),
        Box(110.0, 95.0, 210.0, 145.0),
        Box(30.0, 45.0, 70.0, 75.0),
        Box(220.0, 0.0, 260.0, 50.0),
    ]


def test_darknet_spellings_in_the_names_metadata_are_normalized(detector: Detector) -> None:
    assert detector.manifest.classes == CLASSES
    assert [d.label for d in detector.detect(PHOTO).detections if d.class_id == 2] == ["motorcycle"]


def test_an_overlapping_box_of_the_same_class_is_suppressed_unless_iou_allows_it(detector: Detector) -> None:
    assert detector.detect(PHOTO, iou=0.95).detections == expected(0, 1, 2, 3, 5)


def test_the_confidence_threshold_drops_weaker_detections(detector: Detector) -> None:
    assert detector.detect(PHOTO, conf=0.65).detections == expected(0, 2)


def test_a_low_threshold_lets_the_weak_detection_through(detector: Detector) -> None:
    assert detector.detect(PHOTO, conf=0.05).detections == expected(0, 2, 3, 5, 4)


def test_a_score_equal_to_the_threshold_is_dropped(detector: Detector) -> None:
    # 0.5 is exact in float32 in both layouts (0.625 x 0.8 rounds to it), so this is a true tie.
    assert detector.detect(PHOTO, conf=0.5).detections == expected(0, 2, 3)


def test_a_class_filter_keeps_only_those_classes(detector: Detector) -> None:
    assert detector.detect(PHOTO, classes=["car"]).detections == expected(2)
    assert detector.detect(PHOTO, classes=["motorcycle", "car"]).detections == expected(2, 3)


def test_max_det_counts_only_the_classes_asked_for(detector: Detector) -> None:
    assert detector.detect(PHOTO, classes=["motorcycle"], max_det=1).detections == expected(3)
    assert detector.detect(PHOTO, classes=["person"], iou=0.95, max_det=2).detections == expected(0, 1)


def test_a_class_the_model_does_not_know_is_a_request_error(detector: Detector) -> None:
    with pytest.raises(InvalidRequest, match="unknown class.*: dog"):
        detector.detect(PHOTO, classes=["dog"])


def test_max_det_keeps_the_best_detections(detector: Detector) -> None:
    assert detector.detect(PHOTO, max_det=2).detections == expected(0, 2)
    assert detector.detect(PHOTO, max_det=1).detections == expected(0)


def test_an_image_with_no_candidates_gives_no_detections(cache: ModelCache, family: str) -> None:
    import_export(cache, export(LAYOUTS[family]([])), "empty.onnx")

    assert Detector.from_cache(cache, "empty", threads=1).detect(PHOTO).detections == []


def test_yolov5_score_is_objectness_times_class_probability(cache: ModelCache) -> None:
    rows = [
        Candidate(32, 32, 20, 10, 1, 0.48, objectness=0.8),  # 0.8 x 0.6
        # A sure object of an unsure class and an unsure object of a sure class: both below 0.25.
        Candidate(10, 20, 8, 6, 0, 0.18, objectness=0.9),
        Candidate(50, 50, 10, 10, 2, 0.2, objectness=0.2),
    ]
    import_export(cache, export(yolov5_output(rows)), "v5.onnx")

    detections = Detector.from_cache(cache, "v5", threads=1).detect(PHOTO).detections

    assert [(d.label, d.confidence) for d in detections] == [("car", 0.48)]


def test_the_layout_is_recognised_and_recorded_in_the_manifest(cache: ModelCache, family: str) -> None:
    manifest = import_export(cache, export(LAYOUTS[family](CANDIDATES)), "YOLO-Export.onnx")

    assert manifest.name == "yolo-export"
    assert manifest.family == family
    assert (manifest.input.width, manifest.input.height, manifest.input.preprocess) == (NET, NET, "letterbox")
    assert manifest.classes == CLASSES
    assert manifest.heads == []
    on_disk = json.loads((cache.root / "yolo-export" / MANIFEST_FILE).read_text())
    assert on_disk["family"] == family
    assert cache.get("yolo-export")[0].family == family


def test_symbolic_input_sizes_come_from_the_imgsz_metadata_as_height_then_width(cache: ModelCache) -> None:
    model = export(
        yolov8_output(CANDIDATES),
        metadata=ultralytics_metadata(imgsz="[48, 64]"),
        input_dims=("batch", 3, "height", "width"),
    )

    manifest = import_export(cache, model)

    assert (manifest.input.width, manifest.input.height) == (64, 48)


def test_names_may_also_be_a_list(cache: ModelCache) -> None:
    model = export(
        yolov8_output(CANDIDATES), metadata=ultralytics_metadata(names=str(["a", "b", "motorbike"]))
    )

    assert import_export(cache, model).classes == ["a", "b", "motorcycle"]


def test_an_export_for_another_task_is_refused(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(task="segment"))

    with pytest.raises(ModelError, match="task 'segment'"):
        import_export(cache, model)
    assert not cache.has("yolo")


@pytest.mark.parametrize("shape", [(1, 10, 10), (1, 4 + 3 + 1, 10), (1, 10, 5 + 3 + 1)])
def test_an_output_shape_of_neither_layout_is_refused(cache: ModelCache, shape: tuple[int, int, int]) -> None:
    model = export(np.zeros(shape, np.float32))

    with pytest.raises(ModelError, match="neither YOLOv8/11"):
        import_export(cache, model)


def test_an_output_that_is_not_three_dimensional_is_refused(cache: ModelCache) -> None:
    with pytest.raises(ModelError, match="unexpected shapes"):
        import_export(cache, export(np.zeros((1, 7, 4, 2), np.float32)))


def test_an_export_without_names_metadata_is_refused(cache: ModelCache) -> None:
    meta = ultralytics_metadata()
    del meta["names"]

    with pytest.raises(ModelError, match="no 'names' metadata"):
        import_export(cache, export(yolov8_output(CANDIDATES), metadata=meta))


def test_unreadable_names_metadata_is_refused(cache: ModelCache) -> None:
    model = export(yolov8_output(CANDIDATES), metadata=ultralytics_metadata(names="{0: 'person'"))

    with pytest.raises(ModelError, match="'names' metadata is not readable"):
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


# --- nms -------------------------------------------------------------------------------------------


def boxes(*rows: tuple[float, float, float, float]) -> FloatArray:
    return np.array(rows, np.float32).reshape(-1, 4)


def scores(*values: float) -> FloatArray:
    return np.array(values, np.float32)


def ids(*values: int) -> npt.NDArray[np.int64]:
    return np.array(values, np.int64)


def test_nms_of_nothing_is_nothing() -> None:
    kept = nms(boxes(), scores(), ids(), 0.45, 300)

    assert kept.dtype == np.int64
    assert kept.tolist() == []


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class() -> None:
    b = boxes((0, 0, 10, 10), (1, 0, 11, 10), (0, 1, 10, 11))

    assert nms(b, scores(0.7, 0.9, 0.8), ids(0, 0, 0), 0.45, 300).tolist() == [1]


def test_nms_never_suppresses_across_classes() -> None:
    b = boxes((0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10))

    assert nms(b, scores(0.7, 0.9, 0.8), ids(2, 0, 2), 0.45, 300).tolist() == [1, 2]


def test_nms_returns_indices_best_score_first() -> None:
    b = boxes((0, 0, 10, 10), (20, 20, 30, 30), (40, 40, 50, 50))

    assert nms(b, scores(0.3, 0.9, 0.6), ids(0, 1, 0), 0.45, 300).tolist() == [1, 2, 0]


def test_an_overlap_equal_to_the_iou_threshold_is_kept_and_one_above_it_is_not() -> None:
    # Intersection 50, union 100: IoU exactly 0.5.
    b = boxes((0, 0, 10, 10), (0, 0, 10, 5))
    s, c = scores(0.9, 0.8), ids(0, 0)

    assert nms(b, s, c, 0.5, 300).tolist() == [0, 1]
    assert nms(b, s, c, 0.49, 300).tolist() == [0]


def test_an_iou_of_zero_suppresses_any_overlap_and_keeps_touching_boxes() -> None:
    b = boxes((0, 0, 10, 10), (9, 9, 20, 20), (10, 0, 20, 9))

    assert nms(b, scores(0.9, 0.8, 0.7), ids(0, 0, 0), 0.0, 300).tolist() == [0, 2]


def test_nms_stops_at_the_limit() -> None:
    b = boxes(*((10.0 * i, 0, 10.0 * i + 5, 5) for i in range(5)))

    assert nms(b, scores(0.1, 0.5, 0.3, 0.9, 0.7), ids(0, 1, 0, 1, 0), 0.45, 3).tolist() == [3, 4, 1]


def test_nms_never_suppresses_across_classes_even_for_boxes_past_the_top_left_corner() -> None:
    # Two objects of different classes in the image's top-left corner, their boxes reaching past it
    # (the decoders do not clip). Shifted by max + 1 = 25, the second lands on [17, 17, 49, 49],
    # overlapping the first.
    b = boxes((-8, -8, 24, 24), (-8, -8, 24, 24))

    assert nms(b, scores(0.9, 0.8), ids(0, 1), 0.0, 300).tolist() == [0, 1]


# --- the Darknet head decoder ----------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


ANCHORS = ((10.0, 14.0), (23.0, 27.0), (37.0, 58.0))
N_CLASSES = 2
# A non-square net and grid, so a swapped axis shows: 64 wide, 32 tall, a 4 x 2 grid (stride 16).
NET_W, NET_H, GRID_W, GRID_H = 64, 32, 4, 2


def raw_head(cells: dict[tuple[int, int, int], Sequence[float]]) -> FloatArray:
    """A (1, anchors x (5 + classes), H, W) head, every cell sure of nothing except `cells`.

    `cells` maps (anchor, row, column) to (tx, ty, tw, th, objectness, *class logits).
    """
    per_anchor = 5 + N_CLASSES
    raw = np.zeros((len(ANCHORS), per_anchor, GRID_H, GRID_W), np.float32)
    raw[:, 4] = -12.0  # objectness logit: sigmoid ~ 6e-6
    for (a, row, col), values in cells.items():
        raw[a, :, row, col] = values
    return raw.reshape(1, len(ANCHORS) * per_anchor, GRID_H, GRID_W)


def test_a_darknet_cell_decodes_with_the_darknet_formula_and_scale_x_y() -> None:
    tx, ty, tw, th, obj, cls0, cls1 = 0.3, -0.4, 0.5, -0.2, 6.0, -5.0, 4.0
    anchor, row, col = 1, 1, 2
    s = 1.05
    decoder = DarknetDecoder([DarknetHead(ANCHORS, s, False)], width=NET_W, height=NET_H)

    out = decoder([raw_head({(anchor, row, col): (tx, ty, tw, th, obj, cls0, cls1)})], conf=0.25)

    cx = (col + sigmoid(tx) * s - (s - 1) / 2) / GRID_W * NET_W
    cy = (row + sigmoid(ty) * s - (s - 1) / 2) / GRID_H * NET_H
    w = math.exp(tw) * ANCHORS[anchor][0]
    h = math.exp(th) * ANCHORS[anchor][1]
    np.testing.assert_allclose(out.boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-6)
    np.testing.assert_allclose(out.scores, [sigmoid(obj) * sigmoid(cls1)], rtol=1e-6)
    assert out.class_ids.tolist() == [1]
    assert [a.dtype.name for a in (out.boxes, out.scores, out.class_ids)] == ["float32", "float32", "int64"]


def test_darknet_new_coords_heads_are_already_activated_and_square_their_sizes() -> None:
    # Scaled-YOLOv4 (new_coords=1): the graph applied the logistic; w = (2 * tw)^2 * anchor.
    tx, ty, tw, th, obj, cls0, cls1 = 0.6, 0.2, 0.7, 0.4, 0.9, 0.8, 0.1
    s = 2.0
    decoder = DarknetDecoder([DarknetHead(ANCHORS, s, True)], width=NET_W, height=NET_H)

    out = decoder([raw_head({(2, 0, 3): (tx, ty, tw, th, obj, cls0, cls1)})], conf=0.25)

    cx = (3 + tx * s - (s - 1) / 2) / GRID_W * NET_W
    cy = (0 + ty * s - (s - 1) / 2) / GRID_H * NET_H
    w, h = (2 * tw) ** 2 * ANCHORS[2][0], (2 * th) ** 2 * ANCHORS[2][1]
    np.testing.assert_allclose(out.boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-6)
    np.testing.assert_allclose(out.scores, [obj * cls0], rtol=1e-6)
    assert out.class_ids.tolist() == [0]


def test_darknet_cells_below_the_threshold_are_dropped() -> None:
    decoder = DarknetDecoder([DarknetHead(ANCHORS, 1.0, False)], width=NET_W, height=NET_H)
    raw = raw_head(
        {
            (0, 0, 0): (0, 0, 0, 0, 6.0, 4.0, -4.0),  # kept: 0.998 x 0.982
            (1, 0, 1): (0, 0, 0, 0, -2.0, 9.0, -9.0),  # objectness 0.12
            (2, 1, 0): (0, 0, 0, 0, 9.0, -2.0, -3.0),  # sure object, best class 0.12
        }
    )

    out = decoder([raw], conf=0.25)

    np.testing.assert_allclose(out.scores, [sigmoid(6.0) * sigmoid(4.0)], rtol=1e-6)
    assert decoder([raw], conf=0.999).scores.size == 0


def test_darknet_heads_are_decoded_together() -> None:
    coarse = DarknetHead(ANCHORS, 1.0, False)
    decoder = DarknetDecoder([coarse, coarse], width=NET_W, height=NET_H)
    one = raw_head({(0, 0, 0): (0, 0, 0, 0, 6.0, 4.0, -4.0)})
    other = raw_head({(1, 1, 3): (0, 0, 0, 0, 6.0, -4.0, 4.0)})
    nothing = raw_head({})

    out = decoder([one, other], conf=0.25)

    assert out.class_ids.tolist() == [0, 1]
    # Top-left corners: cell centres (8, 8) and (56, 24) less half of anchors (10, 14) and (23, 27).
    np.testing.assert_allclose(out.boxes[:, :2], [[3.0, 1.0], [44.5, 10.5]], rtol=1e-6)
    assert decoder([nothing, nothing], conf=0.25).scores.size == 0
