"""Decoding raw outputs, one layout at a time: Ultralytics' raw and end-to-end heads through the detector
(graphs the tests build, with boxes worked out by hand), NMS, and Darknet's [yolo] heads."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from tests.exports import (
    CANDIDATES,
    CLASSES,
    NET,
    PAD_X,
    PAD_Y,
    PHOTO,
    PHOTO_H,
    PHOTO_W,
    RATIO,
    Candidate,
    end2end_output,
    expected,
    export,
    yolov5_output,
    yolov8_output,
)
from visionq.detect.decoders import DarknetDecoder, nms
from visionq.detect.detector import Detector
from visionq.detect.manifest import DarknetHead, Family, InputSpec, Manifest
from visionq.detect.types import Box
from visionq.errors import InvalidRequest

FloatArray = npt.NDArray[np.float32]

LAYOUTS: dict[str, Callable[[Sequence[Candidate]], FloatArray]] = {
    "yolov8": yolov8_output,
    "yolov5": yolov5_output,
}


def load(
    tmp_path: Path, model: onnx.ModelProto, family: Family, classes: Sequence[str] = CLASSES
) -> Detector:
    """The detector on `model`, with the manifest an import of it would write."""
    path = tmp_path / f"{family}.onnx"
    path.write_bytes(model.SerializeToString())
    spec = InputSpec(width=NET, height=NET, preprocess="letterbox")
    manifest = Manifest(name=f"{family}n", family=family, input=spec, classes=list(classes), source="test")
    return Detector(path, manifest, threads=1)


@pytest.fixture(params=sorted(LAYOUTS))
def family(request: pytest.FixtureRequest) -> Family:
    name: Family = request.param
    return name


@pytest.fixture
def detector(tmp_path: Path, family: Family) -> Detector:
    """The candidates of tests/exports.py as a raw-head export of `family`."""
    return load(tmp_path, export(LAYOUTS[family](CANDIDATES)), family)


# --- Ultralytics raw heads (YOLOv5, YOLOv8/YOLO11): decoded, then NMS ------------------------------


def test_the_letterbox_geometry_the_expectations_rest_on() -> None:
    assert (RATIO, PAD_X, PAD_Y) == (0.2, 0.0, 8.0)


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


def test_an_overlapping_box_of_the_same_class_is_suppressed_unless_iou_allows_it(detector: Detector) -> None:
    assert detector.detect(PHOTO, iou=0.95).detections == expected(0, 1, 2, 3, 5)
    assert detector.detect(PHOTO, iou=0.9).detections == expected(0, 2, 3, 5)  # their IoU is 0.905


def test_the_confidence_threshold_drops_weaker_detections(detector: Detector) -> None:
    assert detector.detect(PHOTO, conf=0.65).detections == expected(0, 2)


def test_a_low_threshold_lets_the_weak_detection_through(detector: Detector) -> None:
    assert detector.detect(PHOTO, conf=0.05).detections == expected(0, 2, 3, 5, 4)


def test_a_score_equal_to_the_threshold_is_dropped(detector: Detector) -> None:
    # 0.5 is exact in float32 in both layouts (0.625 x 0.8 rounds to it), so this is a true tie.
    assert detector.detect(PHOTO, conf=0.5).detections == expected(0, 2, 3)


def test_a_class_filter_keeps_only_those_classes(detector: Detector) -> None:
    assert detector.detect(PHOTO, classes=["car"]).detections == expected(2)
    assert detector.detect(PHOTO, classes=["motorbike", "car"]).detections == expected(2, 3)


def test_max_det_counts_only_the_classes_asked_for(detector: Detector) -> None:
    assert detector.detect(PHOTO, classes=["motorbike"], max_det=1).detections == expected(3)
    assert detector.detect(PHOTO, classes=["person"], iou=0.95, max_det=2).detections == expected(0, 1)


def test_a_class_the_model_does_not_know_is_a_request_error(detector: Detector) -> None:
    with pytest.raises(InvalidRequest, match="unknown class.*: dog"):
        detector.detect(PHOTO, classes=["dog"])


def test_max_det_keeps_the_best_detections(detector: Detector) -> None:
    assert detector.detect(PHOTO, max_det=2).detections == expected(0, 2)
    assert detector.detect(PHOTO, max_det=1).detections == expected(0)


def test_an_image_with_no_candidates_gives_no_detections(tmp_path: Path, family: Family) -> None:
    assert load(tmp_path, export(LAYOUTS[family]([])), family).detect(PHOTO).detections == []


def test_yolov5_score_is_objectness_times_class_probability(tmp_path: Path) -> None:
    rows = [
        Candidate(32, 32, 20, 10, 1, 0.48, objectness=0.8),  # 0.8 x 0.6
        # A sure object of an unsure class and an unsure object of a sure class: both below 0.25.
        Candidate(10, 20, 8, 6, 0, 0.18, objectness=0.9),
        Candidate(50, 50, 10, 10, 2, 0.2, objectness=0.2),
    ]

    detections = load(tmp_path, export(yolov5_output(rows)), "yolov5").detect(PHOTO).detections

    assert [(d.label, d.confidence) for d in detections] == [("car", 0.48)]


def test_nms_takes_as_many_candidates_as_ultralytics_so_a_low_threshold_finds_as_many_boxes(
    tmp_path: Path,
) -> None:
    # 4,000 copies of one box (one detection after NMS), then 1,000 weaker boxes of 1 x 1 network pixels
    # that only touch each other. Taking the best 3,000 candidates would keep the copies alone.
    copies = [Candidate(32, 32, 8, 8, 0, 0.9, objectness=1.0)] * 4000
    grid = [Candidate(2.5 + i % 40, 12.5 + i // 40, 1, 1, 1, 0.5, objectness=1.0) for i in range(1000)]

    detections = load(tmp_path, export(yolov8_output(copies + grid)), "yolov8").detect(PHOTO, max_det=5000)

    assert [d.label for d in detections.detections].count("person") == 1
    assert [d.label for d in detections.detections].count("car") == 1000


# --- Ultralytics end-to-end heads (YOLOv10, YOLO26, nms=True): final boxes, no NMS ------------------


@pytest.fixture
def end2end(tmp_path: Path) -> Detector:
    return load(tmp_path, export(end2end_output(CANDIDATES)), "end2end")


def test_end_to_end_rows_are_the_detections_best_first_with_no_suppression_of_their_own(
    end2end: Detector,
) -> None:
    # The shifted duplicate of the person (IoU 0.905 with it) stays: the model already chose its boxes.
    assert end2end.detect(PHOTO).detections == expected(0, 1, 2, 3, 5)
    assert end2end.detect(PHOTO, iou=0.1).detections == expected(0, 1, 2, 3, 5)


def test_end_to_end_rows_honour_the_threshold_classes_and_max_det(end2end: Detector) -> None:
    assert end2end.detect(PHOTO, conf=0.65).detections == expected(0, 1, 2)
    assert end2end.detect(PHOTO, conf=0.05).detections == expected(0, 1, 2, 3, 5, 4)
    assert end2end.detect(PHOTO, classes=["car"]).detections == expected(2)
    assert end2end.detect(PHOTO, max_det=2).detections == expected(0, 1)


def test_end_to_end_padding_rows_give_no_detections(tmp_path: Path) -> None:
    assert load(tmp_path, export(end2end_output([])), "end2end").detect(PHOTO).detections == []


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


def darknet_head(scale_x_y: float = 1.0, *, new_coords: bool = False) -> DarknetHead:
    return DarknetHead("head", ANCHORS, N_CLASSES, stride=16, scale_x_y=scale_x_y, new_coords=new_coords)


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
    decoder = DarknetDecoder([darknet_head(s, new_coords=False)], width=NET_W, height=NET_H)

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
    decoder = DarknetDecoder([darknet_head(s, new_coords=True)], width=NET_W, height=NET_H)

    out = decoder([raw_head({(2, 0, 3): (tx, ty, tw, th, obj, cls0, cls1)})], conf=0.25)

    cx = (3 + tx * s - (s - 1) / 2) / GRID_W * NET_W
    cy = (0 + ty * s - (s - 1) / 2) / GRID_H * NET_H
    w, h = (2 * tw) ** 2 * ANCHORS[2][0], (2 * th) ** 2 * ANCHORS[2][1]
    np.testing.assert_allclose(out.boxes, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-6)
    np.testing.assert_allclose(out.scores, [obj * cls0], rtol=1e-6)
    assert out.class_ids.tolist() == [0]


def test_darknet_cells_below_the_threshold_are_dropped() -> None:
    decoder = DarknetDecoder([darknet_head()], width=NET_W, height=NET_H)
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
    coarse = darknet_head()
    decoder = DarknetDecoder([coarse, coarse], width=NET_W, height=NET_H)
    one = raw_head({(0, 0, 0): (0, 0, 0, 0, 6.0, 4.0, -4.0)})
    other = raw_head({(1, 1, 3): (0, 0, 0, 0, 6.0, -4.0, 4.0)})
    nothing = raw_head({})

    out = decoder([one, other], conf=0.25)

    assert out.class_ids.tolist() == [0, 1]
    # Top-left corners: cell centres (8, 8) and (56, 24) less half of anchors (10, 14) and (23, 27).
    np.testing.assert_allclose(out.boxes[:, :2], [[3.0, 1.0], [44.5, 10.5]], rtol=1e-6)
    assert decoder([nothing, nothing], conf=0.25).scores.size == 0
