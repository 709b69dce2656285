"""The detector on the real yolov4-tiny model and real photos, checked against OpenCV's Darknet."""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import DarknetFiles
from tests.helpers import load_detector
from visionq import constants
from visionq.detect.detector import Detector
from visionq.detect.engines import RUNTIMES
from visionq.detect.image import decode_image
from visionq.detect.types import Box, Detection, DetectionResult
from visionq.errors import InvalidImage, InvalidRequest
from visionq.models.cache import ModelCache


def _opencv_detections(files: DarknetFiles, data: bytes, conf: float, iou: float) -> list[Detection]:
    """OpenCV DNN's own Darknet implementation, the reference visionq must agree with."""
    net = cv2.dnn.readNetFromDarknet(str(files.cfg), str(files.weights))
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    h, w = img.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (416, 416), swapRB=True, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    scores = rows[:, 5:]
    ids = scores.argmax(1)
    best = scores[np.arange(len(ids)), ids]
    keep = best > conf
    rows, ids, best = rows[keep], ids[keep], best[keep]
    xywh = [[(r[0] - r[2] / 2) * w, (r[1] - r[3] / 2) * h, r[2] * w, r[3] * h] for r in rows]
    kept = cv2.dnn.NMSBoxesBatched(xywh, best.tolist(), ids.tolist(), conf, iou)
    out = []
    for i in kept:
        x, y, bw, bh = xywh[i]
        out.append(Detection("", int(ids[i]), float(best[i]), Box(x, y, x + bw, y + bh)))
    return out


@pytest.fixture(scope="module", params=RUNTIMES)
def fp32_detector(request: pytest.FixtureRequest, model_cache: ModelCache) -> Detector:
    """yolov4-tiny in fp32 on each runtime."""
    return load_detector(model_cache, constants.DEFAULT_MODEL, runtime=request.param, precision="fp32")


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_detections_agree_with_opencv_darknet_on_real_photos(
    fp32_detector: Detector, darknet_files: DarknetFiles, samples: dict[str, bytes], name: str
) -> None:
    detector = fp32_detector
    ours = detector.detect(samples[name], conf=0.25, iou=0.45)
    reference = [
        d for d in _opencv_detections(darknet_files, samples[name], 0.25, 0.45) if d.confidence >= 0.3
    ]
    assert reference, "OpenCV found nothing: the reference itself is broken"
    strong = [d for d in ours.detections if d.confidence >= 0.3]
    # Near the 0.3 cut a detection may sit on either side by a hair; allow only that.
    assert len(strong) in range(len(reference) - 1, len(reference) + 2)
    for ref in reference:
        match = max(
            (d for d in ours.detections if d.class_id == ref.class_id), key=lambda d: d.box.iou(ref.box)
        )
        assert match.box.iou(ref.box) >= 0.9
        assert abs(match.confidence - ref.confidence) <= 0.05
        assert match.label == detector.manifest.classes[ref.class_id]


def test_bus_photo_shows_people_and_a_bus(detector: Detector, samples: dict[str, bytes]) -> None:
    result = detector.detect(samples["bus.jpg"])
    assert (result.width, result.height) == (810, 1080)
    labels = [d.label for d in result.detections if d.confidence >= 0.5]
    assert labels.count("person") == 3
    assert "bus" in labels
    for d in result.detections:
        assert 0 <= d.box.x1 < d.box.x2 <= 810
        assert 0 <= d.box.y1 < d.box.y2 <= 1080
    assert set(result.timings_ms) == {"decode", "preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in result.timings_ms.values())


def test_labels_use_ultralytics_spelling(detector: Detector) -> None:
    classes = detector.manifest.classes
    assert len(classes) == 80
    for spelled in ("motorcycle", "airplane", "couch", "tv", "dining table", "potted plant"):
        assert spelled in classes
    for darknet in ("motorbike", "aeroplane", "sofa", "tvmonitor", "diningtable", "pottedplant"):
        assert darknet not in classes


def test_confidence_threshold_drops_weaker_detections(detector: Detector, samples: dict[str, bytes]) -> None:
    loose = detector.detect(samples["bus.jpg"], conf=0.25)
    strict = detector.detect(samples["bus.jpg"], conf=0.8)
    assert all(d.confidence > 0.8 for d in strict.detections)
    assert len(strict.detections) < len(loose.detections)
    assert [d.label for d in strict.detections] == [d.label for d in loose.detections if d.confidence > 0.8]


def test_class_filter_keeps_only_named_classes(detector: Detector, samples: dict[str, bytes]) -> None:
    everything = detector.detect(samples["bus.jpg"])
    buses = detector.detect(samples["bus.jpg"], classes=["bus"])
    assert [d.label for d in buses.detections] == ["bus"]
    assert buses.detections == [d for d in everything.detections if d.label == "bus"]


def test_max_detections_keeps_the_most_confident(detector: Detector, samples: dict[str, bytes]) -> None:
    everything = detector.detect(samples["bus.jpg"])
    two = detector.detect(samples["bus.jpg"], max_det=2)
    assert two.detections == everything.detections[:2]


def test_the_nms_iou_threshold_decides_how_many_overlapping_boxes_stay(
    detector: Detector, samples: dict[str, bytes]
) -> None:
    counts = [len(detector.detect(samples["bus.jpg"], iou=iou).detections) for iou in (0.1, 0.45, 0.9)]

    assert counts == sorted(counts)  # a higher threshold never keeps fewer boxes
    assert counts[0] < counts[-1]  # and on this photo of overlapping people it keeps more


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"conf": 1.5}, "conf"),
        ({"conf": -0.1}, "conf"),
        ({"iou": 2.0}, "iou"),
        ({"max_det": 0}, "max_det"),
        ({"classes": ["person", "unicorn"]}, "unicorn"),
    ],
)
def test_out_of_range_options_are_request_errors(
    detector: Detector, samples: dict[str, bytes], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        detector.detect(samples["bus.jpg"], **kwargs)


def _encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _labels(result: DetectionResult, threshold: float = 0.5) -> list[str]:
    return sorted(d.label for d in result.detections if d.confidence >= threshold)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda im: _encode(im.convert("L"), "PNG"), id="grayscale"),
        pytest.param(
            lambda im: _encode(im.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), id="palette"
        ),
        pytest.param(lambda im: _encode(im.convert("RGBA"), "PNG"), id="rgba"),
        pytest.param(lambda im: _encode(im.convert("CMYK"), "JPEG", quality=95), id="cmyk-jpeg"),
        pytest.param(
            lambda im: _encode(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG"),
            id="16-bit-png",
        ),
        pytest.param(lambda im: _encode(im, "WEBP", quality=95), id="webp"),
    ],
)
def test_every_image_mode_users_send_finds_the_people(
    detector: Detector, samples: dict[str, bytes], convert: Any
) -> None:
    photo = Image.open(io.BytesIO(samples["bus.jpg"]))
    result = detector.detect(convert(photo))
    assert (result.width, result.height) == (810, 1080)
    assert _labels(result).count("person") >= 2


def test_exif_rotated_jpeg_gives_boxes_in_the_orientation_the_user_sees(
    detector: Detector, samples: dict[str, bytes]
) -> None:
    upright = Image.open(io.BytesIO(samples["bus.jpg"]))
    # Stored lying on its side with orientation 6 ("rotate 90° clockwise to view"): viewers show it upright.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = detector.detect(_encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    reference = detector.detect(_encode(upright, "JPEG", quality=95))
    assert (rotated.width, rotated.height) == (810, 1080)
    strong = [d for d in reference.detections if d.confidence >= 0.5]
    for ref in strong:
        match = max((d for d in rotated.detections if d.label == ref.label), key=lambda d: d.box.iou(ref.box))
        assert match.box.iou(ref.box) >= 0.85


def big_bus(samples: dict[str, bytes]) -> bytes:
    """bus.jpg at 4x its size, 3240 x 4320: DCT scaling can decode it at 1/4 and still cover 416 x 416."""
    photo = Image.open(io.BytesIO(samples["bus.jpg"]))
    return _encode(photo.resize((3240, 4320), Image.Resampling.BICUBIC), "JPEG", quality=90)


def test_a_large_jpeg_runs_through_the_network_as_decoded_at_reduced_scale(
    detector: Detector, samples: dict[str, bytes]
) -> None:
    big = big_bus(samples)
    reduced = detector.decode(big)
    full = decode_image(big, max_pixels=detector.max_pixels)

    assert (reduced.width, reduced.height) == (full.width, full.height) == (3240, 4320)
    assert reduced.image.size == (810, 1080) and full.image.size == (3240, 4320)
    # What the pipeline finds is what the reduced decode gives, not what the full one would.
    found = detector.detect(big).detections
    assert found == detector.detect(reduced).detections
    assert found != detector.detect(full).detections


def test_large_jpeg_is_decoded_at_reduced_scale_with_boxes_in_full_size_pixels(
    detector: Detector, samples: dict[str, bytes]
) -> None:
    big = big_bus(samples)
    small = detector.detect(samples["bus.jpg"])
    large = detector.detect(big)
    assert (large.width, large.height) == (3240, 4320)
    # The people are the stable part of this photo; the bus, cut by the frame, moves with any re-encoding.
    people = [d for d in small.detections if d.label == "person" and d.confidence >= 0.75]
    assert len(people) == 3
    for ref in people:
        scaled = Box(ref.box.x1 * 4, ref.box.y1 * 4, ref.box.x2 * 4, ref.box.y2 * 4)
        match = max((d for d in large.detections if d.label == ref.label), key=lambda d: d.box.iou(scaled))
        assert match.box.iou(scaled) >= 0.85


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"this is a text file, not an image" * 10, "not_an_image"),
    ],
)
def test_bad_input_is_one_typed_error(detector: Detector, data: bytes, code: str) -> None:
    with pytest.raises(InvalidImage) as info:
        detector.detect(data)
    assert info.value.code == code


def test_truncated_photo_is_a_typed_error(detector: Detector, samples: dict[str, bytes]) -> None:
    with pytest.raises(InvalidImage) as info:
        detector.detect(samples["bus.jpg"][: len(samples["bus.jpg"]) // 2])
    assert info.value.code == "corrupt"
