"""Turn raw model outputs into candidate boxes, one decoder per model layout.

Every decoder returns boxes as (x1, y1, x2, y2) in network-input pixels with one score and one class id
each (the best class, as OpenCV's and Ultralytics' pipelines do), keeping only scores above `conf`.
A decoder whose `needs_nms` is False hands out final boxes (an end-to-end head ran its own selection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from visionq.detect.manifest import DarknetHead

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Candidates:
    boxes: FloatArray  # (N, 4) x1, y1, x2, y2 in network-input pixels
    scores: FloatArray  # (N,)
    class_ids: IntArray  # (N,)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


class Decoder(Protocol):
    needs_nms: ClassVar[bool]  # whether the candidates still need non-maximum suppression

    def __call__(self, outputs: Sequence[npt.NDArray[np.float32]], conf: float) -> Candidates: ...


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)
    return out


def _xywh_to_xyxy(cx: FloatArray, cy: FloatArray, w: FloatArray, h: FloatArray) -> FloatArray:
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


class DarknetDecoder:
    """Darknet [yolo] heads: per-anchor (tx, ty, tw, th, objectness, classes) on an H x W grid.

    `heads` are in the order of the outputs the decoder is called with.
    """

    needs_nms: ClassVar[bool] = True

    def __init__(self, heads: Sequence[DarknetHead], *, width: int, height: int) -> None:
        self.heads = list(heads)
        self.width = width
        self.height = height
        self._anchors = [np.asarray(h.anchors, dtype=np.float32) for h in self.heads]

    def __call__(self, outputs: Sequence[npt.NDArray[np.float32]], conf: float) -> Candidates:
        parts = [
            self._decode_head(h, anchors, o, conf)
            for h, anchors, o in zip(self.heads, self._anchors, outputs, strict=True)
        ]
        parts = [p for p in parts if p.scores.size]
        if not parts:
            return Candidates.empty()
        return Candidates(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
        )

    def _decode_head(
        self, head: DarknetHead, anchors: FloatArray, raw: npt.NDArray[np.float32], conf: float
    ) -> Candidates:
        n_anchors = len(head.anchors)
        _, channels, grid_h, grid_w = raw.shape
        t = raw.reshape(n_anchors, channels // n_anchors, grid_h, grid_w)
        # new_coords heads already went through a logistic activation in the graph.
        act = (lambda v: v) if head.new_coords else _sigmoid
        objectness = act(t[:, 4])
        # score = objectness * class probability <= objectness, so weak cells are dropped before any
        # class is looked at: on a typical photo that leaves a few dozen of ~2,500 cells.
        a, gy, gx = np.nonzero(objectness > conf)
        if a.size == 0:
            return Candidates.empty()
        cell = t[a, :, gy, gx]  # (K, 5 + classes)
        class_probs = act(cell[:, 5:]) * objectness[a, gy, gx][:, None]
        class_ids = class_probs.argmax(axis=1)
        scores = class_probs[np.arange(class_ids.size), class_ids]
        keep = scores > conf
        a, gy, gx, cell, class_ids, scores = (
            a[keep],
            gy[keep],
            gx[keep],
            cell[keep],
            class_ids[keep],
            scores[keep],
        )
        s = head.scale_x_y
        xy = act(cell[:, :2]) * s - (s - 1) / 2
        cx = (gx + xy[:, 0]) / grid_w * self.width
        cy = (gy + xy[:, 1]) / grid_h * self.height
        wh = cell[:, 2:4] * cell[:, 2:4] * 4 if head.new_coords else np.exp(cell[:, 2:4])
        w, h = wh[:, 0] * anchors[a, 0], wh[:, 1] * anchors[a, 1]
        return Candidates(_xywh_to_xyxy(cx, cy, w, h), scores.astype(np.float32), class_ids.astype(np.int64))


class YoloV5Decoder:
    """Ultralytics YOLOv5 export: (1, N, 5 + classes) rows of cx, cy, w, h, objectness, class scores."""

    needs_nms: ClassVar[bool] = True

    def __call__(self, outputs: Sequence[npt.NDArray[np.float32]], conf: float) -> Candidates:
        rows = outputs[0][0]
        rows = rows[rows[:, 4] > conf]
        class_probs = rows[:, 5:] * rows[:, 4:5]
        class_ids = class_probs.argmax(axis=1)
        scores = class_probs[np.arange(class_ids.size), class_ids]
        keep = scores > conf
        rows = rows[keep]
        boxes = _xywh_to_xyxy(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
        return Candidates(boxes, scores[keep].astype(np.float32), class_ids[keep].astype(np.int64))


class YoloV8Decoder:
    """Ultralytics YOLOv8 / YOLO11 export: (1, 4 + classes, N) columns of cx, cy, w, h, class scores."""

    needs_nms: ClassVar[bool] = True

    def __call__(self, outputs: Sequence[npt.NDArray[np.float32]], conf: float) -> Candidates:
        cols = outputs[0][0]
        class_scores = cols[4:]
        class_ids = class_scores.argmax(axis=0)
        scores = class_scores[class_ids, np.arange(class_ids.size)]
        keep = np.nonzero(scores > conf)[0]
        boxes = _xywh_to_xyxy(cols[0, keep], cols[1, keep], cols[2, keep], cols[3, keep])
        return Candidates(boxes, scores[keep].astype(np.float32), class_ids[keep].astype(np.int64))


class End2EndDecoder:
    """Ultralytics end-to-end head (YOLOv10, YOLO26, exports with nms=True): (1, N, 6) rows of
    x1, y1, x2, y2, score, class id, already selected by the model; rows below `conf` are padding."""

    needs_nms: ClassVar[bool] = False

    def __call__(self, outputs: Sequence[npt.NDArray[np.float32]], conf: float) -> Candidates:
        rows = outputs[0][0]
        rows = rows[rows[:, 4] > conf]
        return Candidates(
            rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].round().astype(np.int64)
        )


def nms(boxes: FloatArray, scores: FloatArray, class_ids: IntArray, iou: float, limit: int) -> IntArray:
    """Class-wise greedy non-maximum suppression; returns the kept indices, best score first."""
    if scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Shifting each class to its own region of the plane makes one pass class-wise: boxes of
    # different classes can never overlap.
    low = float(boxes.min())
    offset = class_ids.astype(np.float32)[:, None] * (float(boxes.max()) - low + 1.0)
    b = boxes - low + offset
    areas = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    order = scores.argsort(kind="stable")[::-1]
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])).clip(0)
        h = (np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])).clip(0)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)
