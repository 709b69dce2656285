"""Fitting a decoded image into the network input, and mapping boxes back to the original image.

Both ways of fitting resize with OpenCV's bilinear `resize` (INTER_LINEAR): it is what OpenCV DNN's
`blobFromImage` (the reference for Darknet models) and Ultralytics' `LetterBox` use, so a model gets the
very pixels its own pipeline would give it (Pillow's bilinear rounds down where OpenCV rounds to nearest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from visionq.detect.manifest import InputSpec

# Ultralytics pads letterboxed images with this grey; the models were trained on it.
LETTERBOX_FILL: Final = (114, 114, 114)

Pixels = npt.NDArray[np.uint8]  # H x W x 3, RGB


@dataclass(frozen=True, slots=True)
class Frame:
    """Where the image sits inside the network input: net = pad + original * scale."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: npt.NDArray[np.float32], width: int, height: int) -> npt.NDArray[np.float32]:
        """Boxes (x1, y1, x2, y2) in network pixels → original-image pixels, clipped to the image."""
        out = np.empty_like(boxes)
        out[:, 0::2] = ((boxes[:, 0::2] - self.pad_x) / self.scale_x).clip(0, width)
        out[:, 1::2] = ((boxes[:, 1::2] - self.pad_y) / self.scale_y).clip(0, height)
        return out


def fit(
    image: Image.Image | Pixels, spec: InputSpec, *, full_size: tuple[int, int], bgr: bool = False
) -> tuple[npt.NDArray[np.float32], Frame]:
    """The network's input tensor (RGB) for an image, and where the image sits in it.

    `image` is a Pillow RGB image or H x W x 3 pixels, RGB or (`bgr`) BGR: resizing and padding do not
    care, and the channels are swapped while the tensor is built. `full_size` is the image's size as
    the user sees it, which boxes map back to: `image` itself may be smaller (a JPEG decoded at reduced
    scale).
    """
    pixels = np.asarray(image) if isinstance(image, Image.Image) else image
    if spec.preprocess == "letterbox":
        fitted, frame = letterbox(pixels, spec.width, spec.height, full_size=full_size)
    else:
        fitted, frame = resize(pixels, spec.width, spec.height, full_size=full_size)
    return to_tensor(fitted, bgr=bgr), frame


def to_tensor(pixels: Pixels, *, bgr: bool = False) -> npt.NDArray[np.float32]:
    """HWC uint8 → RGB float32 NCHW in [0, 1], in one pass (BGR pixels are read channel-reversed)."""
    out = np.empty((1, 3, pixels.shape[0], pixels.shape[1]), dtype=np.float32)
    chw = pixels.transpose(2, 0, 1)
    np.multiply(chw[::-1] if bgr else chw, np.float32(1 / 255), out=out[0], casting="unsafe")
    return out


def bilinear(pixels: Pixels, width: int, height: int) -> Pixels:
    """OpenCV's bilinear resize (INTER_LINEAR), or the pixels themselves when already that size."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    return np.asarray(cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)


def resize(pixels: Pixels, width: int, height: int, *, full_size: tuple[int, int]) -> tuple[Pixels, Frame]:
    """Plain resize to the network size, as Darknet does (aspect ratio not kept)."""
    return bilinear(pixels, width, height), Frame(width / full_size[0], height / full_size[1], 0.0, 0.0)


def letterbox(pixels: Pixels, width: int, height: int, *, full_size: tuple[int, int]) -> tuple[Pixels, Frame]:
    """Resize keeping the aspect ratio, centred on grey padding, as Ultralytics' LetterBox does.

    The content size, the padding's rounding and the scale boxes map back with are Ultralytics' own
    (`LetterBox`, `scale_boxes`), so boxes land on the same pixels as in its predictor.
    """
    h, w = pixels.shape[:2]
    ratio = min(width / w, height / h)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    pad_w, pad_h = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    content = bilinear(pixels, new_w, new_h)
    canvas = np.asarray(
        cv2.copyMakeBorder(content, top, bottom, left, right, cv2.BORDER_CONSTANT, value=LETTERBOX_FILL),
        dtype=np.uint8,
    )
    # Boxes map back as Ultralytics' scale_boxes maps them: by the full-size image's ratio, whatever
    # size was decoded, and padding rounded from that ratio (it can differ by a pixel from the above).
    full_w, full_h = full_size
    gain = min(width / full_w, height / full_h)
    pad_x, pad_y = round((width - full_w * gain) / 2 - 0.1), round((height - full_h * gain) / 2 - 0.1)
    return canvas, Frame(gain, gain, float(pad_x), float(pad_y))
