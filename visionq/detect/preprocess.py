"""Fitting a decoded image into the network input, and mapping boxes back to the original image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

# Ultralytics pads letterboxed images with this grey; the models were trained on it.
LETTERBOX_FILL = (114, 114, 114)


@dataclass(frozen=True, slots=True)
class Frame:
    """Where the image sits inside the network input: net = content offset + original * scale."""

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


def to_tensor(image: Image.Image) -> npt.NDArray[np.float32]:
    """RGB HWC uint8 → float32 NCHW in [0, 1], in one pass."""
    hwc = np.asarray(image)
    out = np.empty((1, 3, hwc.shape[0], hwc.shape[1]), dtype=np.float32)
    np.multiply(hwc.transpose(2, 0, 1), np.float32(1 / 255), out=out[0], casting="unsafe")
    return out


def bilinear(image: Image.Image, width: int, height: int) -> Image.Image:
    """Bilinear resampling from the four nearest pixels, as Darknet's and OpenCV's resize do.

    Pillow's `resize` widens its filter when shrinking (antialiasing); the models were trained on
    images shrunk without it, and OpenCV DNN, the reference, feeds them that way, so visionq does too.
    """
    if image.size == (width, height):
        return image
    w, h = image.size
    return image.transform(
        (width, height),
        Image.Transform.AFFINE,
        (w / width, 0, 0, 0, h / height, 0),
        Image.Resampling.BILINEAR,
    )


def resize(
    image: Image.Image, width: int, height: int, *, full_size: tuple[int, int]
) -> tuple[Image.Image, Frame]:
    """Plain resize to the network size, as Darknet does (aspect ratio not kept)."""
    return bilinear(image, width, height), Frame(width / full_size[0], height / full_size[1], 0.0, 0.0)


def letterbox(
    image: Image.Image, width: int, height: int, *, full_size: tuple[int, int]
) -> tuple[Image.Image, Frame]:
    """Resize keeping the aspect ratio, centred on grey padding, as Ultralytics does."""
    w, h = image.size
    ratio = min(width / w, height / h)
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    # Ultralytics' rounding of the padding, so boxes land on the same pixels as in its own predictor.
    left, top = round((width - new_w) / 2 - 0.1), round((height - new_h) / 2 - 0.1)
    canvas = Image.new("RGB", (width, height), LETTERBOX_FILL)
    canvas.paste(bilinear(image, new_w, new_h), (left, top))
    return canvas, Frame(new_w / full_size[0], new_h / full_size[1], float(left), float(top))
