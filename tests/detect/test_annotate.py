"""Drawing detections: boxes and tags land on a copy, encoded as JPEG or PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visionq.detect.annotate import annotate
from visionq.detect.types import Box, Detection

GREY = (128, 128, 128)


def detection(class_id: int, box: tuple[float, float, float, float], label: str = "dog") -> Detection:
    return Detection(label=label, class_id=class_id, confidence=0.93, box=Box(*box))


def drawn(image: Image.Image, detections: list[Detection]) -> Image.Image:
    return Image.open(io.BytesIO(annotate(image, detections, format="PNG")))


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value[0], value[1], value[2]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_output_decodes_in_the_asked_format_at_the_same_size(fmt: str) -> None:
    image = Image.new("RGB", (320, 240), GREY)

    out = Image.open(io.BytesIO(annotate(image, [detection(0, (20, 60, 200, 200))], format=fmt)))

    assert out.format == fmt
    assert out.size == (320, 240)
    assert out.mode == "RGB"


def test_jpeg_is_the_default_format() -> None:
    assert annotate(Image.new("RGB", (64, 64)), []).startswith(b"\xff\xd8\xff")


def test_pixels_on_a_box_edge_change_and_those_far_from_it_do_not() -> None:
    image = Image.new("RGB", (320, 240), GREY)

    out = drawn(image, [detection(3, (100, 100, 200, 200))])

    assert pixel(out, (100, 150)) != GREY  # the left edge, below the tag
    assert pixel(out, (150, 150)) == GREY  # inside the box
    assert pixel(out, (300, 20)) == GREY


def test_the_label_tag_sits_above_the_box() -> None:
    out = drawn(Image.new("RGB", (320, 240), GREY), [detection(3, (100, 100, 200, 200))])

    assert pixel(out, (102, 97)) != GREY


def test_each_class_has_its_own_stable_colour() -> None:
    image = Image.new("RGB", (400, 300), GREY)
    boxes = [
        detection(0, (50, 100, 150, 250)),
        detection(1, (200, 100, 300, 250)),
        detection(0, (320, 100, 390, 250)),
    ]

    out = drawn(image, boxes)

    first, second, third = (pixel(out, (x, 200)) for x in (50, 200, 320))
    assert first == third
    assert first != second
    assert pixel(drawn(image, boxes[:1]), (50, 200)) == first


def test_the_input_image_is_left_untouched() -> None:
    image = Image.new("RGB", (160, 120), GREY)
    before = np.asarray(image).copy()

    annotate(image, [detection(0, (10, 10, 100, 100))])

    assert np.array_equal(np.asarray(image), before)


def test_boxes_past_the_border_and_non_rgb_images_are_drawn() -> None:
    image = Image.new("L", (100, 80), 128)

    out = drawn(image, [detection(5, (-20, -20, 500, 500), label="a very long label that will not fit")])

    assert out.size == (100, 80)
    assert pixel(out, (0, 40)) != GREY


@pytest.mark.parametrize("fmt", ["GIF", "jpeg", "WEBP"])
def test_formats_other_than_jpeg_and_png_are_refused(fmt: str) -> None:
    with pytest.raises(ValueError, match="JPEG"):
        annotate(Image.new("RGB", (8, 8)), [], format=fmt)
