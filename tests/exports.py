"""Graphs in the shape of Ultralytics ONNX exports, built by the tests: a constant output table of
candidates worked out by hand, whatever the image. Shared by the decoder tests (tests/detect) and the
import tests (tests/models)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from visionq.detect.types import Box, Detection

FloatArray = npt.NDArray[np.float32]

NET = 64  # the exports' input: 1 x 3 x 64 x 64
NAMES = "{0: 'person', 1: 'car', 2: 'motorbike'}"  # as Ultralytics writes it
CLASSES = ["person", "car", "motorbike"]  # kept as the model's author spelled them
PHOTO_W, PHOTO_H = 320, 240

# The letterbox geometry, worked out here rather than taken from visionq: the 320x240 photo shrinks by
# r = 0.2 to 64x48 and sits between 8 rows of padding above and below.
RATIO = min(NET / PHOTO_W, NET / PHOTO_H)
PAD_X = (NET - PHOTO_W * RATIO) / 2
PAD_Y = (NET - PHOTO_H * RATIO) / 2


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


def end2end_output(candidates: Sequence[Candidate], rows: int = 10) -> FloatArray:
    """(1, rows, 6): per row x1, y1, x2, y2, score, class id, zero-padded, as end-to-end heads emit."""
    out = np.zeros((1, rows, 6), np.float32)
    for i, c in enumerate(candidates):
        out[0, i] = (c.cx - c.w / 2, c.cy - c.h / 2, c.cx + c.w / 2, c.cy + c.h / 2, c.score, c.class_id)
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
