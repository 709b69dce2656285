"""Int8 static quantization of a cached model (ONNX Runtime, QDQ format), calibrated on real photos.

On CPUs with AVX-512 VNNI (or AVX-VNNI) the int8 graph runs several times faster than fp32; how far
its detections agree with fp32 is printed by `visionq bench detector`.

x86 CPUs without VNNI multiply u8 x s8 pairs into saturating int16 sums (AVX2's `vpmaddubsw`), which
distorts large activations; ONNX Runtime's remedy is 7-bit weights (`reduce_range`). visionq uses them
when the CPU that quantizes has no VNNI, since that is usually the CPU that will run the model.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from PIL import Image

from visionq import constants
from visionq.detect import preprocess
from visionq.detect.image import decode_image
from visionq.detect.manifest import QUANTIZED_SOURCE, Manifest
from visionq.errors import InvalidRequest, ModelError
from visionq.models import sources
from visionq.models.cache import MODEL_FILE, ModelCache
from visionq.system import has_vnni


def calibration_tensors(manifest: Manifest, photos: Sequence[bytes]) -> Iterator[npt.NDArray[np.float32]]:
    """Each photo whole, mirrored, and cropped four ways, fitted to the network as the detector fits it.

    The crops show objects at other scales and positions than the whole frame, which widens the range
    of activations calibration sees when only a few photos are at hand.
    """
    for data in photos:
        image = decode_image(data, max_pixels=constants.MAX_IMAGE_PIXELS).image
        for view in (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
            w, h = view.size
            crops = [
                (0, 0, w, h),
                (0, 0, w * 2 // 3, h * 2 // 3),
                (w // 3, h // 3, w, h),
                (w // 6, 0, w * 5 // 6, h),
            ]
            for box in crops:
                part = view.crop(box)
                yield preprocess.fit(part, manifest.input, full_size=part.size)[0]


def quantize(
    cache: ModelCache,
    name: str,
    photos: Sequence[bytes],
    *,
    out_name: str | None = None,
    reduce_range: bool | None = None,
) -> Manifest:
    """Quantize model `name` to int8 into the cache as `out_name` (default `<name>-int8`).

    `reduce_range`: 7-bit weights, for x86 CPUs without VNNI; None decides by this machine's CPU.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not photos:
        raise InvalidRequest("calibration needs at least one photo")
    manifest, path = cache.get(name)
    out_name = out_name or f"{name}{constants.INT8_SUFFIX}"
    if reduce_range is None:
        reduce_range = not has_vnni()
    # Activation ranges, measured per CPU kind on the sample photos: with full-range weights (VNNI),
    # percentile clipping keeps a few outliers from wasting the int8 range (7/7 found, mean IoU 0.90);
    # with 7-bit weights (AVX2) it loses the weakest detection (6/7, a 0.43 skateboard at 0.23), where
    # the plain min-max range keeps it (7/7, mean IoU 0.92, largest confidence gap 0.14).
    calibration = "min-max" if reduce_range else "percentile"
    tensors = list(calibration_tensors(manifest, photos))
    graph = onnx.load(str(path), load_external_data=False).graph
    input_name = graph.input[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(tensors)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    with tempfile.TemporaryDirectory(prefix="visionq-quantize-") as tmp:
        target = Path(tmp) / MODEL_FILE
        try:
            # ONNX Runtime prints calibration progress on stdout; visionq's commands own stdout.
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(path),
                    str(target),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=(
                        CalibrationMethod.MinMax if reduce_range else CalibrationMethod.Percentile
                    ),
                    # The head convolutions stay fp32: their outputs are box offsets and logits, where
                    # rounding moves boxes; they are a small share of the compute.
                    nodes_to_exclude=_head_convolutions(graph),
                )
        except Exception as exc:  # the quantizer raises assorted untyped errors
            raise ModelError(f"quantizing {name} failed: {exc}") from exc
        model_bytes = target.read_bytes()
    quantized = manifest.model_copy(
        update={
            "name": out_name,
            "source": (
                f"{QUANTIZED_SOURCE}{name} (int8{', 7-bit weights' if reduce_range else ''}, {calibration} "
                f"calibration on {len(photos)} photo(s), {len(tensors)} views)"
            ),
            "sha256": {**manifest.sha256, MODEL_FILE: sources.sha256_of(model_bytes)},
            "created_at": datetime.now(UTC),
        }
    )
    cache.install(quantized, model_bytes)
    return quantized


def _head_convolutions(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes producing the graph outputs (the detection heads)."""
    producers = {out: node for node in graph.node for out in node.output}
    names = []
    for output in graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type == "Identity":
            node = producers.get(node.input[0])
        if node is not None:
            names.append(node.name)
    return names
