"""Fitting images into the network: the very pixels OpenCV DNN (Darknet models) and Ultralytics' LetterBox
(Ultralytics models) feed their models, and boxes mapped back as Ultralytics maps them."""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from visionq.detect import preprocess
from visionq.detect.manifest import InputSpec

Pixels = npt.NDArray[np.uint8]


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def pixels_of(tensor: npt.NDArray[np.float32]) -> Pixels:
    """The uint8 RGB pixels a 1 x 3 x H x W tensor in [0, 1] was made from."""
    pixels: Pixels = np.rint(tensor[0].transpose(1, 2, 0) * 255).astype(np.uint8)
    return pixels


def ultralytics_letterbox(image: Pixels, height: int, width: int) -> Pixels:
    """Ultralytics' LetterBox as its predictor runs it on an ONNX model (auto=False, scaleup=True)."""
    shape = image.shape[:2]
    r = min(height / shape[0], width / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (width - new_unpad[0]) / 2, (height - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        image = np.asarray(cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR), np.uint8)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return np.asarray(padded, np.uint8)


def ultralytics_scale_boxes(
    net: tuple[int, int], boxes: npt.NDArray[np.float32], original: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Ultralytics' scale_boxes (xyxy, padding=True), then clipped: network pixels → original pixels."""
    gain = min(net[0] / original[0], net[1] / original[1])
    pad_x = round((net[1] - original[1] * gain) / 2 - 0.1)
    pad_y = round((net[0] - original[0] * gain) / 2 - 0.1)
    out = boxes.copy()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / gain).clip(0, original[1])
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / gain).clip(0, original[0])
    return out


@pytest.mark.parametrize(("height", "width"), [(640, 640), (384, 640), (416, 320)])
@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_letterbox_gives_ultralytics_own_pixels(
    samples: dict[str, bytes], name: str, height: int, width: int
) -> None:
    image = rgb(samples[name])
    spec = InputSpec(width=width, height=height, preprocess="letterbox")

    tensor, _ = preprocess.fit(image, spec, full_size=image.size)

    reference = ultralytics_letterbox(np.asarray(image), height, width)
    assert tensor.shape == (1, 3, height, width)
    assert np.array_equal(pixels_of(tensor), reference)  # every pixel, no rounding of its own
    np.testing.assert_allclose(tensor[0], reference.transpose(2, 0, 1) / 255, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_resize_gives_opencv_dnns_own_pixels(samples: dict[str, bytes], name: str) -> None:
    image = rgb(samples[name])
    spec = InputSpec(width=416, height=416, preprocess="resize")

    tensor, frame = preprocess.fit(image, spec, full_size=image.size)

    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    blob = cv2.dnn.blobFromImage(bgr, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    np.testing.assert_allclose(tensor, blob, rtol=0, atol=1e-7)
    assert (frame.scale_x, frame.scale_y) == (416 / image.width, 416 / image.height)


def test_letterboxed_boxes_map_back_as_ultralytics_scale_boxes_maps_them() -> None:
    image = Image.new("RGB", (810, 1080))
    spec = InputSpec(width=640, height=640, preprocess="letterbox")
    _, frame = preprocess.fit(image, spec, full_size=image.size)
    boxes = np.array([[100, 0, 300, 200], [79.5, 10, 560.5, 639], [0, 0, 640, 640]], np.float32)

    mapped = frame.to_original(boxes, 810, 1080)

    np.testing.assert_allclose(mapped, ultralytics_scale_boxes((640, 640), boxes, (1080, 810)), rtol=1e-6)


def test_a_reduced_decode_maps_boxes_back_to_the_full_size() -> None:
    # A 3240 x 4320 photo decoded at 1/4: the tensor comes from 810 x 1080 pixels, the boxes go to 4x that.
    spec = InputSpec(width=416, height=416, preprocess="resize")

    _, frame = preprocess.fit(Image.new("RGB", (810, 1080)), spec, full_size=(3240, 4320))

    mapped = frame.to_original(np.array([[0, 0, 416, 416], [104, 208, 208, 312]], np.float32), 3240, 4320)
    np.testing.assert_allclose(mapped, [[0, 0, 3240, 4320], [810, 2160, 1620, 3240]], rtol=1e-6)


def test_the_padding_is_ultralytics_grey_and_the_content_is_centred() -> None:
    white = Image.new("RGB", (200, 100), (255, 255, 255))
    spec = InputSpec(width=64, height=64, preprocess="letterbox")

    tensor, frame = preprocess.fit(white, spec, full_size=white.size)

    pixels = pixels_of(tensor)
    assert (frame.pad_x, frame.pad_y) == (0.0, 16.0)
    assert (pixels[:16] == 114).all() and (pixels[48:] == 114).all()
    assert (pixels[16:48] == 255).all()
