"""Drawing detections onto a copy of an image, for people to look at."""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from visionq.detect.types import Detection

_FORMATS: Final = ("JPEG", "PNG")

# Quality 90 keeps thin lines and small text crisp at about a third of PNG's size.
_JPEG_QUALITY: Final = 90
# The conjugate golden ratio: stepping the hue by it keeps any number of class ids far apart on the wheel.
_HUE_STEP: Final = 0.618033988749895

_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def annotate(image: Image.Image, detections: Sequence[Detection], *, format: str = "JPEG") -> bytes:
    """Return `image` with each detection drawn as a box and a "label 0.93" tag, as JPEG or PNG bytes.

    Boxes are in the image's own pixel coordinates; the input image is left untouched.
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, not {format!r}")
    canvas = image.convert("RGB")  # always a new image, even from RGB, so the caller's stays clean
    # Scale with the image so that lines and text look the same on a thumbnail and a 12 MP photo.
    side = (canvas.width + canvas.height) / 2
    line_width = max(2, round(side * 0.003))
    font = ImageFont.load_default(size=max(12, round(side * 0.025)))
    draw = ImageDraw.Draw(canvas)
    for detection in detections:
        _draw_detection(draw, canvas.size, detection, line_width, font)
    out = io.BytesIO()
    if format == "JPEG":
        canvas.save(out, "JPEG", quality=_JPEG_QUALITY)
    else:
        canvas.save(out, "PNG")
    return out.getvalue()


def _class_colour(class_id: int) -> tuple[int, int, int]:
    # Distinct from neighbouring ids and the same in every process, so a class keeps its colour across images.
    # Odd ids are darker, which separates the pairs whose hues the golden-ratio walk brings close (2, 15).
    value = 0.95 if class_id % 2 == 0 else 0.7
    red, green, blue = colorsys.hsv_to_rgb((class_id * _HUE_STEP) % 1.0, 0.85, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def _draw_detection(
    draw: ImageDraw.ImageDraw, size: tuple[int, int], detection: Detection, line_width: int, font: _Font
) -> None:
    width, height = size
    box = detection.box
    # Boxes from the detector may poke past the border; clamp so the outline stays visible.
    x1, x2 = sorted((min(max(box.x1, 0.0), width - 1.0), min(max(box.x2, 0.0), width - 1.0)))
    y1, y2 = sorted((min(max(box.y1, 0.0), height - 1.0), min(max(box.y2, 0.0), height - 1.0)))
    colour = _class_colour(detection.class_id)
    draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)

    text = f"{detection.label} {detection.confidence:.2f}"
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, line_width)
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    # Above the box when there is room, else just inside its top edge; never off the right border.
    tag_x = max(0.0, min(x1, width - tag_w))
    tag_y = y1 - tag_h if y1 >= tag_h else y1
    draw.rectangle((tag_x, tag_y, tag_x + tag_w, tag_y + tag_h), fill=colour)
    draw.text((tag_x + pad - left, tag_y + pad - top), text, fill=_text_colour(colour), font=font)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    # Rec. 601 luma: dark text on light tags, light text on dark ones.
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)
