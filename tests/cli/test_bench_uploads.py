"""`bench service`'s uploads: a new photo per job, with the same pixels and metadata as the one it copies."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from visionq.bench.service import Uploads, multipart_body, numbered
from visionq.detect.image import decode_image, probe_image

LIMIT = 50_000_000


def _encode(fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((320, 200)).save(out, fmt, **params)
    return out.getvalue()


def _with_orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode("JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    "data", [_encode("JPEG"), _with_orientation_6(), _encode("PNG")], ids=["jpeg", "exif", "png"]
)
def test_a_numbered_photo_decodes_to_the_same_pixels_and_orientation_under_a_new_hash(data: bytes) -> None:
    copy = numbered(data, b"visionq bench 42")

    assert hashlib.sha256(copy).digest() != hashlib.sha256(data).digest()
    assert b"visionq bench 42" in copy
    assert probe_image(copy, max_pixels=LIMIT) == probe_image(data, max_pixels=LIMIT)
    original, renumbered = decode_image(data, max_pixels=LIMIT), decode_image(copy, max_pixels=LIMIT)
    assert (renumbered.width, renumbered.height) == (original.width, original.height)
    assert renumbered.image.tobytes() == original.image.tobytes()
    Image.open(io.BytesIO(copy)).verify()  # the PNG's new chunk has a valid CRC


def test_numbering_refuses_a_format_it_cannot_tag() -> None:
    with pytest.raises(ValueError, match="--repeat"):
        numbered(_encode("GIF"), b"tag")


def test_unique_uploads_differ_every_time_and_repeated_ones_never() -> None:
    jpeg, png = _encode("JPEG"), _encode("PNG")
    unique = Uploads([("a.jpg", jpeg), ("b.png", png)], unique=True)
    bodies = [unique.body(i)[0] for i in range(6)]
    assert len(set(bodies)) == 6
    assert all(jpeg not in b for b in bodies[0::2]) and all(b"a.jpg" in b for b in bodies[0::2])

    repeated = Uploads([("a.jpg", jpeg), ("b.png", png)], unique=False)
    assert repeated.body(0) == repeated.body(2) and repeated.body(1) == repeated.body(3)
    assert jpeg in repeated.body(0)[0] and png in repeated.body(1)[0]
    # Either way a body is the form httpx sends for that file (its boundary aside).
    body, headers = repeated.body(0)
    boundary = headers["Content-Type"].split("boundary=")[1].encode()
    fresh, fresh_headers = multipart_body("a.jpg", jpeg)
    assert fresh.replace(fresh_headers["Content-Type"].split("boundary=")[1].encode(), boundary) == body


def test_uploads_name_their_model_when_given_one() -> None:
    jpeg = _encode("JPEG")
    assert (
        b'name="model"\r\n\r\nyolov4-tiny-int8\r\n'
        in Uploads([("a.jpg", jpeg)], unique=True, model="yolov4-tiny-int8").body(0)[0]
    )
    assert b'name="model"' not in Uploads([("a.jpg", jpeg)], unique=True).body(0)[0]
