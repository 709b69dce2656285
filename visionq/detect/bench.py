"""The detector benchmark: visionq's pipeline against OpenCV DNN's and the raw ONNX Runtime session.

All three run in this process on the same images with the same thread count, in interleaved rounds so
that a noisy neighbour slows each of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionq.detect.detector import Detector
from visionq.detect.image import decode_image
from visionq.detect.preprocess import resize, to_tensor
from visionq.detect.types import Box


@dataclass(slots=True)
class Lane:
    """One contender: a callable run once per image, and the seconds it took."""

    name: str
    run: Callable[[int], object]
    seconds: float = 0.0
    images: int = 0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def opencv_lane(
    cfg: Path, weights: Path, images: Sequence[bytes], *, threads: int, conf: float, iou: float
) -> Lane:
    """OpenCV DNN's own Darknet pipeline: imdecode → blobFromImage → forward → NMSBoxes."""
    import cv2  # test-and-bench dependency only: `pip install -e '.[dev]'`

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out_names = net.getUnconnectedOutLayersNames()
    size = _cfg_size(cfg)

    def run(i: int) -> object:
        img = cv2.imdecode(np.frombuffer(images[i], np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        h, w = img.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, size, swapRB=True, crop=False))
        rows = np.concatenate(net.forward(out_names))
        scores = rows[:, 5:]
        ids = scores.argmax(1)
        best = scores[np.arange(len(ids)), ids]
        keep = best > conf
        r = rows[keep]
        boxes = np.stack(
            [(r[:, 0] - r[:, 2] / 2) * w, (r[:, 1] - r[:, 3] / 2) * h, r[:, 2] * w, r[:, 3] * h], 1
        )
        return cv2.dnn.NMSBoxesBatched(boxes.tolist(), best[keep].tolist(), ids[keep].tolist(), conf, iou)

    return Lane("OpenCV DNN pipeline (imdecode → blob → forward → NMS)", run)


def visionq_lane(detector: Detector, images: Sequence[bytes], *, conf: float, iou: float) -> Lane:
    lane = Lane(f"visionq pipeline, {detector.name} (bytes → detections)", lambda i: None)

    def run(i: int) -> object:
        result = detector.detect(images[i], conf=conf, iou=iou)
        for k, v in result.timings_ms.items():
            lane.stages[k] = lane.stages.get(k, 0.0) + v
        return result

    lane.run = run
    return lane


def raw_lane(detector: Detector, images: Sequence[bytes], *, max_pixels: int) -> Lane:
    """The session alone, on tensors prepared beforehand."""
    width, height = detector.input_size
    tensors = []
    for data in images:
        decoded = decode_image(data, max_pixels=max_pixels)
        fitted, _ = resize(decoded.image, width, height, full_size=(decoded.width, decoded.height))
        tensors.append(to_tensor(fitted))
    return Lane(
        f"ONNX Runtime session alone, {detector.name} (ready tensor)", lambda i: detector.run(tensors[i])
    )


def measure(lanes: Sequence[Lane], n_images: int, *, rounds: int, per_round: int) -> None:
    """Warm each lane, then run `rounds` interleaved rounds of `per_round` images per lane."""
    for lane in lanes:
        for i in range(n_images):
            lane.run(i)
        lane.stages.clear()
    for _ in range(rounds):
        for lane in lanes:
            start = time.perf_counter()
            for k in range(per_round):
                lane.run(k % n_images)
            lane.seconds += time.perf_counter() - start
            lane.images += per_round


def _cfg_size(cfg: Path) -> tuple[int, int]:
    values: dict[str, Any] = {}
    for line in cfg.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), value.strip())
    return int(values["width"]), int(values["height"])


@dataclass(frozen=True, slots=True)
class Agreement:
    """How far a second model's detections agree with a reference's, over detections >= a threshold."""

    reference: int  # reference detections considered
    matched: int  # of those, found by the other model: same label, IoU >= 0.5
    mean_iou: float
    max_confidence_gap: float
    extra: int  # the other model's detections >= threshold with no reference counterpart


def agreement(
    reference: Detector, other: Detector, images: Sequence[bytes], *, threshold: float = 0.3
) -> Agreement:
    """Match each reference detection to the other model's best same-label box."""
    counted = matched = extra = 0
    ious: list[float] = []
    gap = 0.0
    for data in images:
        ref = [d for d in reference.detect(data, conf=0.25).detections if d.confidence >= threshold]
        got = other.detect(data, conf=0.25).detections
        used: set[int] = set()
        for r in ref:
            counted += 1
            scored = [
                (box_iou(r.box, g.box), i) for i, g in enumerate(got) if g.label == r.label and i not in used
            ]
            best = max(scored, default=(0.0, -1))
            if best[0] >= 0.5:
                matched += 1
                used.add(best[1])
                ious.append(best[0])
                gap = max(gap, abs(got[best[1]].confidence - r.confidence))
        extra += sum(1 for i, g in enumerate(got) if i not in used and g.confidence >= threshold)
    return Agreement(counted, matched, float(np.mean(ious)) if ious else 0.0, gap, extra)


def box_iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0
