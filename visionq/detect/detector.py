"""The detector: one ONNX Runtime session per process, image bytes in, detections out."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from visionq import constants
from visionq.detect import preprocess
from visionq.detect.decoders import (
    Candidates,
    DarknetDecoder,
    DarknetHead,
    Decoder,
    YoloV5Decoder,
    YoloV8Decoder,
    nms,
)
from visionq.detect.image import DecodedImage, decode_image
from visionq.detect.types import Box, Detection, DetectionResult
from visionq.errors import InvalidRequest, ModelError
from visionq.models.cache import ModelCache
from visionq.models.manifest import Manifest

# Boxes handed to NMS at most: a near-zero threshold on a busy image must not make NMS quadratic in
# thousands of boxes (Ultralytics caps at 30,000 for 8,400 anchors; YOLOv4-tiny has 2,535).
_MAX_NMS_INPUT = 3000


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and container cpusets)."""
    return len(os.sched_getaffinity(0))


class Detector:
    """A loaded model. Build one per process and reuse it: the session is the expensive part."""

    def __init__(
        self,
        model_path: Path,
        manifest: Manifest,
        *,
        threads: int | None = None,
        max_pixels: int = constants.MAX_IMAGE_PIXELS,
    ) -> None:
        self.manifest = manifest
        self.max_pixels = max_pixels
        self.threads = threads or available_cores()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise to users
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._decoder = self._make_decoder(manifest)

    @classmethod
    def from_cache(
        cls,
        cache: ModelCache,
        name: str,
        *,
        threads: int | None = None,
        max_pixels: int = constants.MAX_IMAGE_PIXELS,
    ) -> Detector:
        manifest, path = cache.get(name)
        return cls(path, manifest, threads=threads, max_pixels=max_pixels)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input.width, self.manifest.input.height

    def class_ids(self, names: Sequence[str]) -> list[int]:
        """Class ids of `names`; unknown names are a request error listing them."""
        return self.manifest.class_ids(names)

    def warm_up(self) -> None:
        """One inference on a blank input, so the first real job does not pay for lazy allocations."""
        width, height = self.input_size
        self.run(np.zeros((1, 3, height, width), dtype=np.float32))

    def run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """The raw session on a ready input tensor."""
        outputs: list[npt.NDArray[np.float32]] = self.session.run(self._outputs, {self._input: tensor})
        return outputs

    def detect(
        self,
        data: bytes,
        *,
        conf: float = constants.DEFAULT_CONFIDENCE,
        iou: float = constants.DEFAULT_IOU,
        classes: Sequence[str] | None = None,
        max_det: int = constants.DEFAULT_MAX_DETECTIONS,
    ) -> DetectionResult:
        """Detect objects in encoded image bytes (JPEG, PNG, WebP, BMP, GIF, TIFF)."""
        _check_params(conf, iou, max_det)
        wanted = self.class_ids(classes) if classes else None
        t0 = time.perf_counter()
        decoded = decode_image(data, max_pixels=self.max_pixels, min_size=self.input_size)
        t1 = time.perf_counter()
        tensor, frame = self.prepare(decoded)
        t2 = time.perf_counter()
        outputs = self.run(tensor)
        t3 = time.perf_counter()
        detections = self._postprocess(outputs, frame, decoded, conf, iou, wanted, max_det)
        t4 = time.perf_counter()
        timings = {
            "decode": (t1 - t0) * 1000,
            "preprocess": (t2 - t1) * 1000,
            "inference": (t3 - t2) * 1000,
            "postprocess": (t4 - t3) * 1000,
        }
        return DetectionResult(
            decoded.width, decoded.height, detections, {k: round(v, 3) for k, v in timings.items()}
        )

    def prepare(self, decoded: DecodedImage) -> tuple[npt.NDArray[np.float32], preprocess.Frame]:
        """The network's input tensor for a decoded image, and where the image sits in it."""
        width, height = self.input_size
        fit = preprocess.letterbox if self.manifest.input.preprocess == "letterbox" else preprocess.resize
        # Boxes map back to the full-resolution size: DCT scaling shrank only what was decoded.
        fitted, frame = fit(decoded.image, width, height, full_size=(decoded.width, decoded.height))
        return preprocess.to_tensor(fitted), frame

    def _postprocess(
        self,
        outputs: list[npt.NDArray[np.float32]],
        frame: preprocess.Frame,
        decoded: DecodedImage,
        conf: float,
        iou: float,
        wanted: list[int] | None,
        max_det: int,
    ) -> list[Detection]:
        cands = self._decoder(outputs, conf)
        if wanted is not None:
            cands = _select(cands, np.isin(cands.class_ids, wanted))
        if cands.scores.size > _MAX_NMS_INPUT:
            cands = _select(cands, np.argsort(cands.scores)[::-1][:_MAX_NMS_INPUT])
        keep = nms(cands.boxes, cands.scores, cands.class_ids, iou, max_det)
        boxes = frame.to_original(cands.boxes[keep], decoded.width, decoded.height)
        labels = self.manifest.classes
        return [
            Detection(
                label=labels[int(c)],
                class_id=int(c),
                confidence=round(float(s), 4),
                box=Box(*(round(float(v), 1) for v in b)),
            )
            for b, s, c in zip(boxes, cands.scores[keep], cands.class_ids[keep], strict=True)
        ]

    def _make_decoder(self, manifest: Manifest) -> Decoder:
        if manifest.family == "darknet":
            by_output = {h.output: h for h in manifest.heads}
            missing = [o for o in self._outputs if o not in by_output]
            if missing or len(self._outputs) != len(manifest.heads):
                raise ModelError(f"model outputs {self._outputs} do not match the manifest's heads")
            heads = [
                DarknetHead(tuple(by_output[o].anchors), by_output[o].scale_x_y, by_output[o].new_coords)
                for o in self._outputs
            ]
            return DarknetDecoder(heads, width=manifest.input.width, height=manifest.input.height)
        return YoloV5Decoder() if manifest.family == "yolov5" else YoloV8Decoder()


def _select(cands: Candidates, index: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Candidates:
    return Candidates(cands.boxes[index], cands.scores[index], cands.class_ids[index])


def _check_params(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf <= 1.0:
        raise InvalidRequest(f"conf must be between 0 and 1, got {conf}")
    if not 0.0 <= iou <= 1.0:
        raise InvalidRequest(f"iou must be between 0 and 1, got {iou}")
    if max_det < 1:
        raise InvalidRequest(f"max_det must be at least 1, got {max_det}")
