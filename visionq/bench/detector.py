"""The detector benchmark: visionq's pipeline on each runtime against OpenCV DNN's and the raw runtimes.

Every contender runs on the same images with the same thread count, each in its own process, in
interleaved rounds (see `measure`).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np

from visionq import constants
from visionq.detect.detector import Detector
from visionq.models.cache import ModelCache
from visionq.models.darknet_cfg import parse_cfg


@dataclass(frozen=True, slots=True)
class LaneSpec:
    """What a contender's process needs to build it: picklable, so it crosses to a fresh process."""

    kind: Literal["visionq", "raw", "opencv"]
    name: str
    images: tuple[bytes, ...]
    threads: int
    model_root: Path | None = None  # visionq and raw: the model cache and the model's name
    model: str | None = None
    runtime: str = "auto"  # visionq and raw: as Detector takes them
    precision: str = "auto"
    darknet: tuple[Path, Path] | None = None  # opencv: cfg and weights
    conf: float = constants.DEFAULT_CONFIDENCE
    iou: float = constants.DEFAULT_IOU


@dataclass(slots=True)
class Lane:
    """A contender's totals: images run, seconds taken, and per-stage milliseconds (visionq only)."""

    spec: LaneSpec
    seconds: float = 0.0
    images: int = 0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def measure(specs: Sequence[LaneSpec], *, rounds: int, per_round: int) -> list[Lane]:
    """Time each contender in a process of its own, in interleaved rounds.

    Separate processes keep one library's thread pool (ONNX Runtime's spinning workers, OpenCV's)
    from stealing cores from the next contender; interleaving makes a noisy neighbour slow all alike.
    Only the contender being timed works; the others wait on their pipe.
    """
    ctx = multiprocessing.get_context("spawn")
    lanes = [Lane(spec) for spec in specs]
    workers = []
    try:
        for spec in specs:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_serve_lane, args=(spec, child), daemon=True)
            process.start()
            workers.append((process, parent))
        for _, conn in workers:
            _expect(conn.recv())  # built and warmed up
        for r in range(rounds):
            # Each round starts with another contender, so none always runs right after the same one.
            order = [(r + k) % len(lanes) for k in range(len(lanes))]
            for lane, (_, conn) in ((lanes[i], workers[i]) for i in order):
                conn.send(per_round)
                seconds, stages = _expect(conn.recv())
                lane.seconds += seconds
                lane.images += per_round
                for k, v in stages.items():
                    lane.stages[k] = lane.stages.get(k, 0.0) + v
    finally:
        for process, conn in workers:
            conn.send(0)
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return lanes


def _expect(message: Any) -> Any:
    if isinstance(message, BaseException):
        raise message
    return message


def _serve_lane(spec: LaneSpec, conn: Connection) -> None:
    """In the contender's process: build it, warm it up, then run `n` images per request until 0."""
    try:
        run = _build(spec)
        stages: dict[str, float] = {}
        for i in range(len(spec.images)):
            run(i, stages)
        conn.send(None)
        while n := conn.recv():
            stages = {}
            start = time.perf_counter()
            for k in range(n):
                run(k % len(spec.images), stages)
            conn.send((time.perf_counter() - start, stages))
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(exc)


def _build(spec: LaneSpec) -> Callable[[int, dict[str, float]], object]:
    if spec.kind == "opencv":
        assert spec.darknet is not None
        return _opencv_runner(*spec.darknet, spec)
    assert spec.model_root is not None and spec.model is not None
    manifest, path = ModelCache(spec.model_root).get(spec.model)
    detector = Detector(path, manifest, threads=spec.threads, runtime=spec.runtime, precision=spec.precision)
    if spec.kind == "raw":
        # Prepared as the pipeline prepares them (resize or letterbox, per the model), once, untimed.
        tensors = [detector.prepare(detector.decode(data))[0] for data in spec.images]
        return lambda i, _stages: detector.run(tensors[i])

    def run(i: int, stages: dict[str, float]) -> object:
        result = detector.detect(spec.images[i], conf=spec.conf, iou=spec.iou)
        for k, v in result.timings_ms.items():
            stages[k] = stages.get(k, 0.0) + v
        return result

    return run


def _opencv_runner(cfg: Path, weights: Path, spec: LaneSpec) -> Callable[[int, dict[str, float]], object]:
    """OpenCV DNN's own Darknet pipeline: imdecode → blobFromImage → forward → NMSBoxes."""
    import cv2  # test-and-bench dependency only: `pip install -e '.[dev]'`

    cv2.setNumThreads(spec.threads)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    out_names = net.getUnconnectedOutLayersNames()
    size = _cfg_size(cfg)

    def run(i: int, _stages: dict[str, float]) -> object:
        img = cv2.imdecode(np.frombuffer(spec.images[i], np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        h, w = img.shape[:2]
        net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, size, swapRB=True, crop=False))
        rows = np.concatenate(net.forward(out_names))
        scores = rows[:, 5:]
        ids = scores.argmax(1)
        best = scores[np.arange(len(ids)), ids]
        keep = best > spec.conf
        r = rows[keep]
        xywh = np.stack(
            [(r[:, 0] - r[:, 2] / 2) * w, (r[:, 1] - r[:, 3] / 2) * h, r[:, 2] * w, r[:, 3] * h], 1
        )
        return cv2.dnn.NMSBoxesBatched(
            xywh.tolist(), best[keep].tolist(), ids[keep].tolist(), spec.conf, spec.iou
        )

    return run


def _cfg_size(cfg: Path) -> tuple[int, int]:
    net = parse_cfg(cfg.read_text())[0]
    return net.int_("width"), net.int_("height")


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
                (r.box.iou(g.box), i) for i, g in enumerate(got) if g.label == r.label and i not in used
            ]
            best = max(scored, default=(0.0, -1))
            if best[0] >= 0.5:
                matched += 1
                used.add(best[1])
                ious.append(best[0])
                gap = max(gap, abs(got[best[1]].confidence - r.confidence))
        extra += sum(1 for i, g in enumerate(got) if i not in used and g.confidence >= threshold)
    return Agreement(counted, matched, float(np.mean(ious)) if ious else 0.0, gap, extra)


def in_process(detector: Detector, images: Sequence[bytes], *, count: int) -> tuple[float, float]:
    """Images/s and CPU ms per image of `detector` run in this process, one image after another."""
    for data in images:  # warm-up, untimed
        detector.detect(data)
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(count):
        detector.detect(images[i % len(images)])
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    return count / wall, used * 1000 / count
