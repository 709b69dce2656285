"""Untrusted image bytes to pixels, refusing junk and bombs before any pixel is decoded.

Pillow reads every header (format, size, EXIF orientation) and decodes every format but one: colour and
grey JPEGs, most of what users send, are decoded by OpenCV's libjpeg-turbo straight into a BGR array.
Through Pillow, a JPEG's pixels were unpacked into Pillow's own 4-byte layout and then copied out to
numpy again, which cost bus.jpg 7.5 ms of CPU where OpenCV's decode and the resize take 4.0 ms.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Final, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile

from visionq.errors import ErrorCode, InvalidImage

SUPPORTED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

_CONTENT_TYPES: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
}

# What a Pillow plugin raises to say "not my format"; Image.open moves on to the next plugin on these.
_NOT_THIS_FORMAT: Final = (SyntaxError, IndexError, TypeError, struct.error)
# What Pillow raises on damaged data. Warnings are listed because where they are errors (the test suite
# runs with -W error) Pillow's "corrupt EXIF" and "malformed MPO" warnings arrive as exceptions.
_DAMAGED: Final = (OSError, ValueError, EOFError, KeyError, *_NOT_THIS_FORMAT, Warning)
# A few plugins (GIF frame extents, TIFF tiles, MPO frames) run Pillow's own bomb check while parsing.
_BOMB: Final = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# EXIF orientation -> the transpose viewers apply (the table ImageOps.exif_transpose uses). Doing it here
# rather than calling exif_transpose avoids its copy of every unrotated image and its EXIF rewrite.
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


Channels = Literal["RGB", "BGR"]

# OpenCV's JPEG decode at 1/1, 1/2, 1/4, 1/8 scale (libjpeg's DCT scaling), EXIF left to visionq.
_CV_SCALES: Final = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An image ready for the detector, as the user sees it, with its full-resolution size.

    `pixels` is H x W x 3 uint8 in `channels` order: BGR where OpenCV decoded it (the detector swaps the
    channels while it builds its input, so no pass over the full-size image is spent on it). It may be
    smaller than `width` x `height` when `decode_image` got `min_size` (JPEG DCT scaling).
    """

    pixels: npt.NDArray[np.uint8]
    width: int
    height: int
    format: str
    content_type: str
    channels: Channels = "RGB"

    @property
    def image(self) -> Image.Image:
        """The pixels as a Pillow RGB image (a copy), for drawing on."""
        rgb = self.pixels if self.channels == "RGB" else self.pixels[:, :, ::-1]
        return Image.fromarray(np.ascontiguousarray(rgb))


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an image's header says: its format and its size as the user sees it."""

    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.format]


def probe_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """The format and size (as the user sees it) from the header alone; raises like decode_image.

    It also refuses, as CORRUPT, data cut off before its end where the format lets that be told without
    decoding (`_missing_end`): a JPEG with no end marker after its last scan, a PNG without IEND, a GIF
    without its trailer, a WebP or BMP shorter than its header says. Damage inside the compressed data
    is found only by decoding it.
    """
    im, orientation = _open(data, max_pixels)
    fmt = _format(im)
    _check_whole(data, fmt, im)
    width, height = _as_seen(im.size, orientation)
    return ImageInfo(fmt, width, height)


def _check_whole(data: bytes, fmt: str, im: ImageFile.ImageFile) -> None:
    """Raise CORRUPT when `_missing_end` finds the file cut off."""
    missing = _missing_end(data, fmt, im)
    if missing:
        raise InvalidImage(f"The {fmt} image is truncated ({missing}).", code=ErrorCode.CORRUPT)


def _missing_end(data: bytes, fmt: str, im: ImageFile.ImageFile) -> str | None:
    """What a cheap look at the end of `data` finds missing, or None when it looks whole."""
    if fmt == "JPEG":
        # Markers cannot occur inside entropy-coded data (an 0xFF there is stuffed as FF 00), so a whole
        # file has an end-of-image marker after its last start-of-scan. Searching from the end finds
        # a whole file's end marker at once; in a cut-off one, the last end marker found is an EXIF
        # thumbnail's (or none), with the main image's scan after it.
        end = data.rfind(b"\xff\xd9")
        if end < 0:
            return "no end-of-image marker"
        if data.find(b"\xff\xda", end) >= 0 or data.find(b"\xff\xda") < 0:
            return "no end-of-image marker after its last scan"
    elif fmt == "PNG":
        if data.rfind(b"IEND") < 0:
            return "no IEND chunk"
    elif fmt == "GIF":
        if not data.rstrip(b"\x00").endswith(b";"):
            return "no trailer"
    elif fmt == "WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            return f"{len(data):,} of the {declared:,} bytes its header declares"
    elif fmt == "BMP" and im.tile and im.tile[0].codec_name == "raw":
        # Uncompressed rows of a known stride (Pillow's raw tile: raw mode, stride, orientation).
        args = im.tile[0].args
        stride = args[1] if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], int) else 0
        needed = im.tile[0].offset + stride * im.size[1]
        if stride > 0 and len(data) < needed:
            return f"{len(data):,} of the {needed:,} bytes its header implies"
    return None


def decode_image(data: bytes, *, max_pixels: int, min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode `data` to RGB in the orientation the user sees; every failure is `InvalidImage` with a code.

    With `min_size` (width, height as the user sees it) a large JPEG is decoded at 1/2, 1/4 or 1/8 scale,
    still at least `min_size`, which is several times cheaper than a full decode.
    """
    im, orientation = _open(data, max_pixels)
    fmt = _format(im)
    width, height = _as_seen(im.size, orientation)
    if fmt == "JPEG" and im.mode in ("RGB", "L"):
        pixels = _decode_jpeg(data, im, orientation, min_size)
        return DecodedImage(pixels, width, height, fmt, _CONTENT_TYPES[fmt], channels="BGR")
    try:
        if min_size is not None and fmt == "JPEG":
            # draft() works on the stored axes: the swap of orientations 5-8 undoes itself.
            want_w, want_h = _as_seen(min_size, orientation)
            im.draft(None, (max(1, want_w), max(1, want_h)))
        im.load()
        rgb = _to_rgb(im)
        if orientation in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orientation])
    except _BOMB as exc:
        raise _too_large(exc) from exc
    except _DAMAGED as exc:
        raise InvalidImage(
            f"The {fmt} image is corrupt or truncated ({exc}).", code=ErrorCode.CORRUPT
        ) from exc
    return DecodedImage(np.asarray(rgb), width, height, fmt, _CONTENT_TYPES[fmt])


def _decode_jpeg(
    data: bytes, im: ImageFile.ImageFile, orientation: int, min_size: tuple[int, int] | None
) -> npt.NDArray[np.uint8]:
    """A colour or grey JPEG decoded by OpenCV to BGR, at the DCT scale Pillow's draft() would pick,
    turned as its EXIF orientation says."""
    _check_whole(data, "JPEG", im)  # libjpeg fills a cut-off file with grey where Pillow refuses it
    scale = 1
    if min_size is not None:
        want_w, want_h = _as_seen(min_size, orientation)  # on the stored axes: the swap undoes itself
        ratio = min(im.size[0] // max(1, want_w), im.size[1] // max(1, want_h))
        scale = next((s for s in (8, 4, 2) if ratio >= s), 1)  # ratio is 0 below the input size
    flags = _CV_SCALES[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None or bgr.ndim != 3:
        raise InvalidImage(
            "The JPEG image is corrupt (its pixels cannot be decoded).", code=ErrorCode.CORRUPT
        )
    pixels: npt.NDArray[np.uint8] = np.asarray(bgr, dtype=np.uint8)
    if orientation in _TRANSPOSE:
        pixels = np.ascontiguousarray(_turn(pixels, orientation))
    return pixels


def _turn(pixels: npt.NDArray[np.uint8], orientation: int) -> npt.NDArray[np.uint8]:
    """What Pillow's transpose for `orientation` (see _TRANSPOSE) does, on an H x W x C array."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels.transpose(1, 0, 2)[::-1, ::-1]
    return np.rot90(pixels, k=1)  # 8


def _open(data: bytes, max_pixels: int) -> tuple[ImageFile.ImageFile, int]:
    """Parse the header with the plugin of a supported format, check the size, read the EXIF orientation."""
    if not data:
        raise InvalidImage("The image is empty (0 bytes).", code=ErrorCode.EMPTY)
    # Loads every plugin once, so that WEBP and TIFF are registered and unsupported formats can be named.
    Image.init()
    fp = io.BytesIO(data)
    prefix = data[:16]
    im = _open_supported(fp, prefix)
    if im is None:
        raise _unsupported_or_unknown(fp, prefix)
    width, height = im.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"The image has no pixels ({width}x{height}).", code=ErrorCode.CORRUPT)
    if width * height > max_pixels:
        raise InvalidImage(
            f"The image is {width}x{height} ({width * height:,} pixels), "
            f"more than the limit of {max_pixels:,} pixels.",
            code=ErrorCode.TOO_LARGE,
        )
    return im, _orientation(im)


def _open_supported(fp: IO[bytes], prefix: bytes) -> ImageFile.ImageFile | None:
    # Calling the plugins ourselves rather than Image.open skips its check against Pillow's global
    # MAX_IMAGE_PIXELS (a warning above 89 MP, an error above 179 MP): only `max_pixels` decides.
    for fmt in SUPPORTED_FORMATS:
        if fmt not in Image.OPEN:  # a build without that plugin
            continue
        factory, accept = Image.OPEN[fmt]
        verdict = _accepts(accept, prefix)
        if isinstance(verdict, str):  # Pillow knows the format but was built without its codec
            raise InvalidImage(
                f"{fmt} images cannot be read here: {verdict}.", code=ErrorCode.UNSUPPORTED_FORMAT
            )
        if not verdict:
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except _BOMB as exc:
            raise _too_large(exc) from exc
        except _DAMAGED as exc:
            msg = f"The data starts like a {fmt} image but its header is damaged ({exc})."
            raise InvalidImage(msg, code=ErrorCode.CORRUPT) from exc
    return None


def _accepts(accept: Callable[[bytes], bool | str] | None, prefix: bytes) -> bool | str:
    """A plugin's quick look at the first bytes; some read past the end of a very short file."""
    if accept is None:
        return True
    try:
        return accept(prefix)
    except Exception:  # struct.error, IndexError...: too short to be this format
        return False


def _unsupported_or_unknown(fp: IO[bytes], prefix: bytes) -> InvalidImage:
    supported = ", ".join(SUPPORTED_FORMATS)
    for fmt in Image.ID:
        if fmt not in SUPPORTED_FORMATS and fmt != "MPO" and _claimed_by(fmt, fp, prefix):
            msg = f"{fmt} images are not supported; send one of {supported}."
            return InvalidImage(msg, code=ErrorCode.UNSUPPORTED_FORMAT)
    return InvalidImage(
        f"The data is not an image (supported formats: {supported}).", code=ErrorCode.NOT_AN_IMAGE
    )


def _claimed_by(fmt: str, fp: IO[bytes], prefix: bytes) -> bool:
    factory, accept = Image.OPEN[fmt]
    verdict = _accepts(accept, prefix)
    if not verdict or isinstance(verdict, str):
        return bool(verdict)
    fp.seek(0)
    try:
        factory(fp, "")
    except _NOT_THIS_FORMAT:
        return False
    except Exception:
        return True  # Image.open, too, takes any other error as "this plugin claimed the file"
    return True


def _orientation(im: ImageFile.ImageFile) -> int:
    # PngImageFile.getexif() decodes every pixel to find an eXIf chunk placed after the image data. Only
    # one before it counts here (where the PNG spec puts it): probing stays header-only and agrees with
    # decoding.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    # Pillow's TIFF plugin applies the Orientation tag itself: the size it reports is already turned and
    # load() transposes the pixels, so applying it again would turn the image twice.
    if im.format == "TIFF":
        return 1
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DAMAGED:
        return 1  # viewers show images with unreadable EXIF unrotated, so boxes must match that
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(im)
    if im.has_transparency_data:
        return _over_white(im if mode == "RGBA" else im.convert("RGBA"))
    if mode == "RGB":
        return im
    # Covers L, 1, P, CMYK (Pillow undoes Adobe's inversion), YCbCr, LAB, HSV, and F (clipped to 0..255).
    return im.convert("RGB")


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    # Pillow's convert() clips at 255, which turns almost every 16-bit image white. Undo the PNG spec's
    # 8 -> 16 bit scaling (x257) instead, so a 16-bit image looks like its 8-bit version.
    values = np.asarray(im)
    if im.mode == "I":
        values = np.clip(values, 0, 65535)
    gray = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    # Viewers show transparency over a white page; dropping alpha instead would show whatever colour the
    # transparent pixels happen to hold, usually black.
    page = Image.new("RGB", rgba.size, (255, 255, 255))
    page.paste(rgba, (0, 0), rgba)
    return page


def _format(im: ImageFile.ImageFile) -> str:
    # Phone JPEGs that carry a second picture (a depth map, a gain map) open as "MPO"; they are JPEG files.
    return "JPEG" if im.format == "MPO" else str(im.format)


def _as_seen(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation >= 5 else size


def _too_large(bomb: Exception) -> InvalidImage:
    return InvalidImage(f"The image is too large to decode safely ({bomb}).", code=ErrorCode.TOO_LARGE)
