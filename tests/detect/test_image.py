"""Decoding user image bytes: every mode Pillow hands out becomes RGB, bad input a coded InvalidImage."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import crafted_png, png_bomb
from visionq.detect.image import SUPPORTED_FORMATS, DecodedImage, ImageInfo, decode_image, probe_image
from visionq.errors import InvalidImage

LIMIT = 40_000_000
RED = (255, 0, 0)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def noise_jpeg(width: int, height: int, **params: Any) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", **params)


def with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))


def palette_image(mode: str, fill: int | tuple[int, int]) -> Image.Image:
    image = Image.new(mode, (8, 8), fill)
    image.putpalette([255, 0, 0, 0, 0, 255])
    return image


def rgb16_png() -> bytes:
    row = b"\x00" + struct.pack(">HHH", 0x1234, 0xABCD, 0xFFFF) * 8
    return crafted_png(8, 8, 16, 2, zlib.compress(row * 8))


def animation(fmt: str, **params: Any) -> bytes:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)


def assert_colour(decoded: DecodedImage, expected: tuple[int, int, int], tolerance: int = 0) -> None:
    assert decoded.image.mode == "RGB"
    actual = decoded.image.getpixel((4, 4))
    assert isinstance(actual, tuple)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), actual


def rejection(data: bytes, max_pixels: int = LIMIT) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, max_pixels=max_pixels)
    return caught.value


CMYK_RED = (0, 255, 255, 0)
# (the mode Pillow opens the file in, the file, the colour a viewer shows, tolerance for lossy codecs)
MODE_CASES = [
    ("RGB", encode(Image.new("RGB", (8, 8), RED), "JPEG"), RED, 2),
    ("RGB", encode(Image.new("RGB", (8, 8), RED), "PNG", transparency=RED), WHITE, 0),
    ("L", encode(Image.new("L", (8, 8), 100), "PNG"), (100, 100, 100), 0),
    ("1", encode(Image.new("1", (8, 8), 1), "BMP"), WHITE, 0),
    ("P", encode(palette_image("P", 0), "GIF"), RED, 0),
    ("P", encode(palette_image("P", 0), "PNG", transparency=1), RED, 0),
    ("P", encode(palette_image("P", 0), "PNG", transparency=0), WHITE, 0),
    ("PA", encode(palette_image("PA", (0, 0)), "TIFF"), WHITE, 0),
    ("RGBA", encode(Image.new("RGBA", (8, 8), (*RED, 128)), "PNG"), (255, 127, 127), 1),
    ("LA", encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), WHITE, 0),
    ("CMYK", encode(Image.new("CMYK", (8, 8), CMYK_RED), "JPEG"), RED, 3),
    ("CMYK", encode(Image.new("CMYK", (8, 8), CMYK_RED), "TIFF"), RED, 0),
    ("YCbCr", encode(Image.new("RGB", (8, 8), RED).convert("YCbCr"), "TIFF"), RED, 2),
    ("LAB", encode(Image.new("LAB", (8, 8), (255, 128, 128)), "TIFF"), WHITE, 2),
    ("I;16B", encode(Image.new("I;16B", (8, 8), 100 * 257), "TIFF"), (100, 100, 100), 0),
    ("I", encode(Image.new("I", (8, 8), 100 * 257), "TIFF"), (100, 100, 100), 0),
    ("RGB", rgb16_png(), (0x12, 0xAB, 0xFF), 1),  # Pillow keeps the high byte of 16-bit RGB
    ("RGB", encode(Image.new("RGB", (8, 8), RED), "WEBP", lossless=True), RED, 0),
    ("P", animation("GIF"), RED, 0),
    ("RGB", animation("WEBP", lossless=True), RED, 0),
]


@pytest.mark.parametrize(
    ("mode", "data", "expected", "tolerance"),
    MODE_CASES,
    ids=[f"{case[0]} {Image.open(io.BytesIO(case[1])).format} #{n}" for n, case in enumerate(MODE_CASES)],
)
def test_every_pillow_mode_is_decoded_to_the_rgb_a_viewer_shows(
    mode: str, data: bytes, expected: tuple[int, int, int], tolerance: int
) -> None:
    assert Image.open(io.BytesIO(data)).mode == mode

    decoded = decode_image(data, max_pixels=LIMIT)

    assert (decoded.width, decoded.height) == decoded.image.size == (8, 8)
    assert_colour(decoded, expected, tolerance)


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_each_supported_format_reports_its_name_and_content_type(fmt: str) -> None:
    data = encode(Image.new("RGB", (30, 20), RED), fmt)

    decoded = decode_image(data, max_pixels=LIMIT)

    assert decoded.format == fmt
    assert decoded.content_type == f"image/{fmt.lower()}"
    assert probe_image(data, max_pixels=LIMIT) == ImageInfo(fmt, 30, 20)


def test_a_jpeg_with_a_second_picture_opens_as_mpo_but_is_reported_as_jpeg() -> None:
    depth_map = Image.new("RGB", (8, 8))
    data = encode(Image.new("RGB", (8, 8), RED), "MPO", save_all=True, append_images=[depth_map])
    assert Image.open(io.BytesIO(data)).format == "MPO"

    decoded = decode_image(data, max_pixels=LIMIT)

    assert (decoded.format, decoded.content_type) == ("JPEG", "image/jpeg")
    assert_colour(decoded, RED, 2)


def test_sixteen_bit_grayscale_png_looks_like_its_eight_bit_version() -> None:
    eight = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    # x257 is how 8 bits widen to 16; +100 stands for the extra precision a 16-bit source really has
    sixteen = Image.fromarray(np.minimum(eight.astype(np.int32) * 257 + 100, 65535).astype(np.uint16))
    data = encode(sixteen, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    decoded = np.asarray(decode_image(data, max_pixels=LIMIT).image).astype(int)

    assert np.abs(decoded - eight[:, :, None]).max() <= 1


def test_float_tiff_is_clipped_to_0_255() -> None:
    data = encode(Image.fromarray(np.array([[-5.0, 100.0, 300.0]], dtype=np.float32)), "TIFF")

    image = decode_image(data, max_pixels=LIMIT).image

    assert [image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), WHITE]


def test_exif_orientation_6_swaps_the_size_and_puts_the_marker_where_the_user_sees_it() -> None:
    stored = Image.new("RGB", (60, 40), (128, 128, 128))
    stored.paste(RED, (0, 0, 10, 10))  # stored top-left; a 90 degree clockwise turn shows it top-right
    data = with_orientation(stored, "JPEG", 6)

    decoded = decode_image(data, max_pixels=LIMIT)

    assert (decoded.width, decoded.height) == decoded.image.size == (40, 60)
    assert probe_image(data, max_pixels=LIMIT) == ImageInfo("JPEG", 40, 60)
    top_right, top_left = decoded.image.getpixel((35, 4)), decoded.image.getpixel((4, 4))
    assert isinstance(top_right, tuple) and isinstance(top_left, tuple)
    assert top_right[0] > 200 and top_right[1] < 60
    assert abs(top_left[0] - 128) < 10


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_jpeg_decoded_by_opencv_matches_pillow_s_decode_in_every_orientation(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    blocks = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8).repeat(16, axis=0).repeat(16, axis=1)
    data = with_orientation(Image.fromarray(blocks), "JPEG", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"), dtype=int)

    decoded = decode_image(data, max_pixels=LIMIT)

    assert decoded.channels == "BGR"  # OpenCV's order; the detector swaps while building its input
    rgb = np.asarray(decoded.image, dtype=int)
    assert rgb.shape == expected.shape
    assert (decoded.width, decoded.height) == (rgb.shape[1], rgb.shape[0])
    assert np.abs(rgb - expected).max() <= 2  # the same libjpeg-turbo decode, up to its builds' rounding


def test_a_jpeg_at_reduced_scale_and_a_grey_one_come_out_as_pillow_decodes_them() -> None:
    photo = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8).repeat(40, 0).repeat(40, 1)
    )  # 1600 x 1200
    data = encode(photo, "JPEG", quality=90)
    reduced = decode_image(data, max_pixels=LIMIT, min_size=(416, 416))
    draft = Image.open(io.BytesIO(data))
    draft.draft("RGB", (416, 416))
    # 1/2 scale: at 1/4 it would be 300 high, less than the 416 asked for.
    assert reduced.pixels.shape == (600, 800, 3) == (draft.size[1], draft.size[0], 3)
    assert (
        np.abs(np.asarray(reduced.image, dtype=int) - np.asarray(draft.convert("RGB"), dtype=int)).max() <= 2
    )

    grey = decode_image(encode(photo.convert("L"), "JPEG"), max_pixels=LIMIT)
    assert grey.pixels.shape == (1200, 1600, 3)
    assert np.array_equal(grey.pixels[..., 0], grey.pixels[..., 2])


def test_a_cmyk_jpeg_is_left_to_pillow_which_undoes_adobe_s_inversion() -> None:
    decoded = decode_image(encode(Image.new("CMYK", (8, 8), CMYK_RED), "JPEG"), max_pixels=LIMIT)
    assert decoded.channels == "RGB"
    assert_colour(decoded, (255, 0, 0), 12)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_imageops_exif_transpose(orientation: int, fmt: str) -> None:
    stored = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2)
    data = with_orientation(stored, fmt, orientation)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))

    decoded = decode_image(data, max_pixels=LIMIT)

    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))
    assert (decoded.width, decoded.height) == expected.size
    assert probe_image(data, max_pixels=LIMIT) == ImageInfo(fmt, *expected.size)


def test_large_jpeg_with_min_size_is_decoded_smaller_but_reports_its_full_size() -> None:
    data = encode(Image.new("RGB", (4000, 3000), RED), "JPEG")

    decoded = decode_image(data, max_pixels=LIMIT, min_size=(416, 416))

    assert (decoded.width, decoded.height) == (4000, 3000)
    assert 416 <= decoded.image.width < 4000 and 416 <= decoded.image.height < 3000
    assert decoded.image.size == (1000, 750)  # 1/4; 1/8 would leave it 375 high
    assert decode_image(data, max_pixels=LIMIT).image.size == (4000, 3000)


@pytest.mark.parametrize("size", [(300, 190), (416, 300), (1000, 400)])
def test_a_jpeg_smaller_than_min_size_on_a_side_is_decoded_at_full_size(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, RED), "JPEG")

    decoded = decode_image(data, max_pixels=LIMIT, min_size=(416, 416))

    assert decoded.image.size == size


def test_min_size_is_met_in_the_orientation_the_user_sees() -> None:
    data = with_orientation(Image.new("RGB", (4000, 2000), RED), "JPEG", 6)

    decoded = decode_image(data, max_pixels=LIMIT, min_size=(1000, 500))

    assert (decoded.width, decoded.height) == (2000, 4000)
    assert decoded.image.size == (1000, 2000)  # 1/2; 1/4 would leave it 500 wide


def test_min_size_leaves_other_formats_at_full_size() -> None:
    data = encode(Image.new("RGB", (900, 900), RED), "PNG")

    assert decode_image(data, max_pixels=LIMIT, min_size=(100, 100)).image.size == (900, 900)


def test_zero_bytes_are_rejected_as_empty() -> None:
    assert rejection(b"").code == "empty"


@pytest.mark.parametrize(
    "data",
    [random.Random(0).randbytes(4096), b"hello world\n" * 100, b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["random", "text", "svg"],
)
def test_bytes_that_are_no_image_are_rejected_as_not_an_image(data: bytes) -> None:
    error = rejection(data)

    assert error.code == "not_an_image"
    assert "JPEG" in error.message


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA", "PCX"])
def test_unsupported_formats_are_named_and_the_supported_ones_listed(fmt: str) -> None:
    error = rejection(encode(Image.new("RGB", (16, 16), RED), fmt))

    assert error.code == "unsupported_format"
    assert fmt in error.message
    assert ", ".join(SUPPORTED_FORMATS) in error.message


def test_a_30000_by_30000_png_bomb_is_refused_instantly_before_decoding() -> None:
    bomb = png_bomb(30000)
    started = time.perf_counter()
    error = rejection(bomb)
    with pytest.raises(InvalidImage, match="30000x30000"):
        probe_image(bomb, max_pixels=LIMIT)

    assert error.code == "too_large"
    assert time.perf_counter() - started < 0.5


def test_one_pixel_over_max_pixels_is_too_large() -> None:
    data = encode(Image.new("RGB", (101, 100)), "PNG")

    assert rejection(data, max_pixels=10_099).code == "too_large"
    assert decode_image(data, max_pixels=10_100).image.size == (101, 100)


def test_the_size_limit_is_max_pixels_not_pillows_global_limit() -> None:
    # 200 MP is past Pillow's own bomb error (2 x MAX_IMAGE_PIXELS); only the header is read.
    data = crafted_png(20000, 10000, 1, 0, b"")
    limit_before = Image.MAX_IMAGE_PIXELS

    assert probe_image(data, max_pixels=10**9) == ImageInfo("PNG", 20000, 10000)
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_a_gif_frame_bigger_than_its_screen_is_too_large() -> None:
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20000, 20000, 0) + b"\x02\x02\x4c\x01\x00;"

    assert rejection(screen + frame).code == "too_large"


def test_truncated_jpeg_is_rejected_as_corrupt() -> None:
    data = noise_jpeg(64, 64)
    truncated = data[: len(data) * 2 // 3]

    error = rejection(truncated)

    assert error.code == "corrupt"
    assert "JPEG" in error.message


def probe_rejection(data: bytes) -> InvalidImage:
    with pytest.raises(InvalidImage) as caught:
        probe_image(data, max_pixels=LIMIT)
    return caught.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
@pytest.mark.parametrize("kept", [0.5, 0.9, 0.99])
def test_the_header_probe_tells_a_cut_off_file_where_the_format_allows(fmt: str, kept: float) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels).convert("P") if fmt == "GIF" else Image.fromarray(pixels), fmt)
    assert probe_image(data, max_pixels=LIMIT) == ImageInfo(fmt, 64, 64)  # whole, it passes

    error = probe_rejection(data[: int(len(data) * kept)])

    assert error.code == "corrupt"
    # Pillow's WebP plugin refuses the header of a cut-off file itself ("header is damaged").
    assert f"The {fmt} image is truncated" in error.message or f"a {fmt} image" in error.message


def test_the_probe_accepts_bytes_after_a_jpeg_s_end_and_an_exif_thumbnail_s_markers() -> None:
    thumbnail = noise_jpeg(16, 16)
    exif = Image.Exif()
    exif[0x010E] = "scan"  # ImageDescription
    data = encode(Image.fromarray(np.zeros((64, 64, 3), np.uint8)), "JPEG", exif=exif.tobytes())
    # Trailing bytes after the end-of-image (some cameras append data) do not make it truncated.
    assert probe_image(data + b"trailer" + thumbnail, max_pixels=LIMIT).format == "JPEG"
    # A cut through the main scan is truncated even with a whole thumbnail's markers before it.
    cut = data[:-200]
    assert probe_rejection(cut).code == "corrupt"


def test_damage_inside_the_compressed_data_is_found_by_decoding_not_by_the_probe() -> None:
    data = bytearray(
        encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)), "PNG")
    )
    data[100:140] = bytes(40)  # zeroes inside the IDAT chunk: the header and IEND are intact
    damaged = bytes(data)

    assert probe_image(damaged, max_pixels=LIMIT) == ImageInfo("PNG", 64, 64)
    assert rejection(damaged).code == "corrupt"


def test_truncated_png_is_rejected_as_corrupt() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)), "PNG")

    assert rejection(data[: len(data) // 2]).code == "corrupt"


def test_a_damaged_header_is_rejected_as_corrupt() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")

    assert rejection(data[:20]).code == "corrupt"


def test_garbage_image_data_is_rejected_as_corrupt() -> None:
    data = crafted_png(8, 8, 8, 0, b"this is not zlib data")

    assert rejection(data).code == "corrupt"


def test_a_zero_sized_image_is_refused() -> None:
    assert rejection(crafted_png(0, 10, 8, 0, zlib.compress(b""))).code == "corrupt"


@pytest.mark.parametrize("data", [b"\x00", b"B", b"\x13\xed", b"II", b"\x89P", b"GIF"])
def test_a_file_of_a_few_bytes_is_a_typed_error_even_where_a_format_check_reads_past_its_end(
    data: bytes,
) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data, max_pixels=LIMIT)
    assert info.value.code in {"not_an_image", "corrupt"}
