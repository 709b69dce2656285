"""The detector: one compiled model per process (ONNX Runtime or OpenVINO), image bytes in, detections out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from visionq import constants
from visionq.detect import engines, preprocess
from visionq.detect.decoders import (
    Candidates,
    DarknetDecoder,
    Decoder,
    End2EndDecoder,
    YoloV5Decoder,
    YoloV8Decoder,
    nms,
)
from visionq.detect.image import DecodedImage, decode_image
from visionq.detect.manifest import Manifest
from visionq.detect.types import Box, Detection, DetectionResult
from visionq.errors import InvalidRequest, ModelError
from visionq.system import available_cores


class Detector:
    """A loaded model. Build one per process and reuse it: the session is the expensive part."""

    def __init__(
        self,
        model_path: Path,
        manifest: Manifest,
        *,
        threads: int | None = None,
        runtime: str = engines.AUTO,
        precision: str = engines.AUTO,
        max_pixels: int = constants.MAX_IMAGE_PIXELS,
    ) -> None:
        """`runtime` and `precision` may say `auto`: `engines.resolve` settles them, or raises ModelError."""
        self.manifest = manifest
        self.max_pixels = max_pixels
        self.threads = threads or available_cores()
        chosen, chosen_precision = engines.resolve(runtime, precision, int8=manifest.int8)
        self.engine = engines.open_engine(
            model_path, runtime=chosen, precision=chosen_precision, threads=self.threads
        )
        self._decoder = self._make_decoder(manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def runtime(self) -> str:
        """What runs the model, e.g. `openvino int8`."""
        return f"{self.engine.runtime} {self.engine.precision}"

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
        """The raw engine on a ready input tensor."""
        return self.engine.run(tensor)

    def detect(
        self,
        image: bytes | DecodedImage,
        *,
        conf: float = constants.DEFAULT_CONFIDENCE,
        iou: float = constants.DEFAULT_IOU,
        classes: Sequence[str] | None = None,
        max_det: int = constants.DEFAULT_MAX_DETECTIONS,
    ) -> DetectionResult:
        """Detect objects in encoded image bytes (JPEG, PNG, WebP, BMP, GIF, TIFF), decoded as `decode`
        does, or in an image decoded already (at whatever scale)."""
        _check_params(conf, iou, max_det)
        wanted = self.class_ids(classes) if classes else None
        t0 = time.perf_counter()
        decoded = self.decode(image) if isinstance(image, bytes) else image
        t1 = time.perf_counter()
        tensor, frame = self.prepare(decoded)
        t2 = time.perf_counter()
        outputs = self.run(tensor)
        t3 = time.perf_counter()
        detections = self._postprocess(outputs, frame, decoded, conf, iou, wanted, max_det)
        t4 = time.perf_counter()
        stages = {"preprocess": t2 - t1, "inference": t3 - t2, "postprocess": t4 - t3}
        if decoded is not image:
            stages = {"decode": t1 - t0, **stages}
        timings = {k: round(v * 1000, 3) for k, v in stages.items()}
        return DetectionResult(decoded.width, decoded.height, detections, timings)

    def decode(self, data: bytes) -> DecodedImage:
        """Decode image bytes as the pipeline does: a large JPEG at the reduced scale the network needs."""
        return decode_image(data, max_pixels=self.max_pixels, min_size=self.input_size)

    def prepare(self, decoded: DecodedImage) -> tuple[npt.NDArray[np.float32], preprocess.Frame]:
        """The network's input tensor for a decoded image, and where the image sits in it."""
        # Boxes map back to the full-resolution size: DCT scaling shrank only what was decoded.
        return preprocess.fit(
            decoded.pixels,
            self.manifest.input,
            full_size=(decoded.width, decoded.height),
            bgr=decoded.channels == "BGR",
        )

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
        if self._decoder.needs_nms:
            if cands.scores.size > constants.MAX_NMS_CANDIDATES:
                cands = _select(
                    cands, np.argsort(cands.scores, kind="stable")[::-1][: constants.MAX_NMS_CANDIDATES]
                )
            keep = nms(cands.boxes, cands.scores, cands.class_ids, iou, max_det)
        else:
            keep = np.argsort(cands.scores, kind="stable")[::-1][:max_det]
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
            outputs = self.engine.outputs
            missing = [o for o in outputs if o not in by_output]
            if missing or len(outputs) != len(manifest.heads):
                raise ModelError(f"model outputs {outputs} do not match the manifest's heads")
            heads = [by_output[o] for o in outputs]
            return DarknetDecoder(heads, width=manifest.input.width, height=manifest.input.height)
        if manifest.family == "yolov5":
            return YoloV5Decoder()
        if manifest.family == "end2end":
            return End2EndDecoder()
        return YoloV8Decoder()


def _select(cands: Candidates, index: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Candidates:
    return Candidates(cands.boxes[index], cands.scores[index], cands.class_ids[index])


def _check_params(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf <= 1.0:
        raise InvalidRequest(f"conf must be between 0 and 1, got {conf}")
    if not 0.0 <= iou <= 1.0:
        raise InvalidRequest(f"iou must be between 0 and 1, got {iou}")
    if max_det < 1:
        raise InvalidRequest(f"max_det must be at least 1, got {max_det}")
