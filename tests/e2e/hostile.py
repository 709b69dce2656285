"""A corpus of hostile requests: broken images, lying headers, bombs, floods of parts, bad parameters.

Each `Probe` is one request and the answers it may get: the statuses and error codes a correct API
gives it. A damaged image the API cannot tell from a good one by its header alone may be accepted
(202); its job must then fail with an image code, never crash a worker.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.helpers import png_bomb

IMAGE_CODES = frozenset({"corrupt", "not_an_image", "unsupported_format", "empty", "too_large"})


@dataclass(frozen=True)
class Probe:
    """One hostile request (httpx.Client.request arguments) and what may answer it."""

    name: str
    method: str
    path: str
    statuses: frozenset[int]
    codes: frozenset[str] = frozenset()  # the error codes allowed for a 4xx (empty: any 4xx code)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # A Content-Length claimed beyond the bytes sent (httpx will not send such a request; http.client does).
    declared_length: int | None = None


def _upload(
    name: str,
    body: bytes,
    statuses: set[int],
    codes: frozenset[str] | set[str] = frozenset(),
    *,
    filename: str = "image",
    content_type: str = "application/octet-stream",
    field_name: str = "image",
    path: str = "/v1/jobs",
    **kwargs: Any,
) -> Probe:
    """A multipart upload of `body` as the field `field_name`, with the other form fields in `data`."""
    files = {field_name: (filename, body, content_type)}
    return Probe(name, "POST", path, frozenset(statuses), frozenset(codes), {"files": files, **kwargs})


def encoded(photo: bytes) -> dict[str, bytes]:
    """The photo in each format the corpus damages: JPEG, PNG, GIF and WebP."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    image.thumbnail((320, 320))
    out = {}
    for fmt in ("JPEG", "PNG", "GIF", "WEBP"):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out[fmt.lower()] = buffer.getvalue()
    return out


def damaged_images(photo: bytes) -> Iterator[Probe]:
    """Each format cut short at several points, and with bytes overwritten in its header and body."""
    for fmt, data in encoded(photo).items():
        for fraction in (0.02, 0.3, 0.7, 0.99):
            cut = data[: max(1, int(len(data) * fraction))]
            yield _upload(f"{fmt} truncated to {fraction:.0%}", cut, {202, 415, 422}, IMAGE_CODES)
        for offset in (3, 12, 30, len(data) // 2):
            broken = bytearray(data)
            broken[offset : offset + 16] = b"\xff" * 16
            yield _upload(
                f"{fmt} overwritten at byte {offset}", bytes(broken), {202, 413, 415, 422}, IMAGE_CODES
            )
        yield _upload(f"{fmt} with its magic only", data[:8], {415, 422}, IMAGE_CODES)


def lying_headers(photo: bytes) -> Iterator[Probe]:
    """Content types and file names that say something else than the bytes."""
    images = encoded(photo)
    yield _upload(
        "PNG labelled image/jpeg, named .jpg",
        images["png"],
        {202},
        filename="x.jpg",
        content_type="image/jpeg",
    )
    yield _upload(
        "text labelled image/png",
        b"hello, not an image\n" * 50,
        {415},
        {"not_an_image"},
        content_type="image/png",
    )
    yield _upload(
        "HTML labelled image/gif",
        b"<html><script>alert(1)</script></html>",
        {415},
        {"not_an_image"},
        content_type="image/gif",
    )
    yield _upload(
        "an SVG", b'<svg xmlns="http://www.w3.org/2000/svg"/>', {415}, {"not_an_image", "unsupported_format"}
    )
    yield _upload(
        "an ICO",
        b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(200),
        {415},
        {"not_an_image", "unsupported_format"},
    )
    yield _upload("empty file", b"", {400}, {"empty"})
    yield Probe(
        "JPEG bytes as the whole body, typed image/jpeg",
        "POST",
        "/v1/jobs",
        frozenset({415}),
        frozenset({"unsupported_media_type"}),
        {"content": images["jpeg"], "headers": {"content-type": "image/jpeg"}},
    )
    yield Probe(
        "a multipart type with no boundary",
        "POST",
        "/v1/jobs",
        frozenset({400, 415, 422}),
        frozenset(),
        {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}},
    )
    yield Probe(
        "a multipart body cut mid-part",
        "POST",
        "/v1/jobs",
        frozenset({400, 422}),
        frozenset(),
        {
            "content": b"--b\r\nContent-Disposition: form-data; "
            b'name="image"; filename="a"\r\n\r\n\xff\xd8\xff',
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
    )
    for name in (
        "../../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/dev/zero",
        "a\x00b.jpg",
        "%2e%2e%2f" * 20,
    ):
        yield _upload(f"file name {name!r}", images["jpeg"], {202}, filename=name)


def bombs_and_floods() -> Iterator[Probe]:
    """Decompression bombs, bodies far over the limit, and thousands of multipart parts."""
    yield _upload("PNG bomb 30000x30000 (~110 KB)", png_bomb(30000), {413}, {"too_large"})
    yield _upload("PNG bomb 8000x8000", png_bomb(8000), {413}, {"too_large"})
    big = bytes(30 * 1024 * 1024)
    yield _upload("30 MB upload", big, {413}, {"too_large"})
    yield Probe(
        "30 MB upload sent chunked, no Content-Length",
        "POST",
        "/v1/jobs",
        frozenset({413}),
        frozenset({"too_large"}),
        {
            "content": _chunks(_multipart_file(big)),
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
    )
    yield Probe(
        "Content-Length of 10 GB",
        "POST",
        "/v1/jobs",
        frozenset({413}),
        frozenset({"too_large"}),
        {"content": b"x" * 100, "headers": {"content-type": "multipart/form-data; boundary=b"}},
        declared_length=10**10,
    )
    for count, kind in ((5000, "fields"), (3000, "files")):
        yield Probe(
            f"{count} multipart {kind}",
            "POST",
            "/v1/jobs",
            frozenset({400, 413}),
            frozenset({"bad_request", "too_large"}),
            {
                "content": _parts(count, files=kind == "files"),
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            },
        )


def bad_parameters(photo: bytes) -> Iterator[Probe]:
    """Out-of-range and wrong-type parameters, on both upload routes."""
    jpeg = encoded(photo)["jpeg"]
    bad: list[dict[str, str]] = [
        {"conf": "2"},
        {"conf": "-0.1"},
        {"conf": "abc"},
        {"conf": "nan"},
        {"conf": "1e309"},
        {"iou": "1.5"},
        {"iou": "-1"},
        {"max_det": "0"},
        {"max_det": "100000"},
        {"max_det": "1.5"},
        {"max_det": "9" * 400},
        {"classes": "unicorn"},
        {"classes": "person,,\x00"},
        {"model": "../../etc"},
        {"model": "no-such-model"},
        {"model": "x" * 5000},
    ]
    for path in ("/v1/jobs", "/v1/detect"):
        for fields in bad:
            yield _upload(
                f"{path} with {fields}",
                jpeg,
                {422},
                {"invalid_request", "unknown_class", "unknown_model"},
                path=path,
                data=fields,
            )
    yield Probe(
        "/v1/detect timeout=-1",
        "POST",
        "/v1/detect?timeout=-1",
        frozenset({422}),
        frozenset({"invalid_request"}),
        {"files": {"image": ("a", jpeg)}},
    )
    yield Probe(
        "/v1/detect timeout=abc",
        "POST",
        "/v1/detect?timeout=abc",
        frozenset({422}),
        frozenset({"invalid_request"}),
        {"files": {"image": ("a", jpeg)}},
    )
    yield _upload("no image field", jpeg, {422}, {"invalid_request"}, field_name="picture")
    for key in ("has space", "x" * 300, "tab\there"):
        yield _upload(
            f"Idempotency-Key {key[:20]!r}",
            jpeg,
            {422},
            {"invalid_request"},
            headers={"Idempotency-Key": key},
        )
    for query in (
        "limit=0",
        "limit=-5",
        "limit=abc",
        "limit=100000",
        "status=exploded",
        "cursor=%00%ff",
        "cursor=" + "A" * 3000,
    ):
        yield Probe(
            f"list with {query[:30]}",
            "GET",
            f"/v1/jobs?{query}",
            frozenset({422}),
            frozenset({"invalid_request"}),
        )


def unknown_ids() -> Iterator[Probe]:
    """Ids of no job, malformed ids, and routes that do not exist."""
    missing = str(uuid.uuid4())
    for job_id in (
        missing,
        missing.upper(),
        "not-a-uuid",
        "0" * 36,
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
        "x" * 2000,
    ):
        yield Probe(
            f"GET job {job_id[:20]!r}",
            "GET",
            f"/v1/jobs/{job_id}",
            frozenset({404}),
            frozenset({"not_found"}),
        )
        yield Probe(
            f"DELETE job {job_id[:20]!r}",
            "DELETE",
            f"/v1/jobs/{job_id}",
            frozenset({404}),
            frozenset({"not_found"}),
        )
        yield Probe(
            f"annotated job {job_id[:20]!r}",
            "GET",
            f"/v1/jobs/{job_id}/annotated",
            frozenset({404}),
            frozenset({"not_found"}),
        )
    yield Probe("unknown route", "GET", "/v1/../../etc/passwd", frozenset({404}), frozenset({"not_found"}))
    yield Probe(
        "PATCH a job", "PATCH", f"/v1/jobs/{missing}", frozenset({405}), frozenset({"method_not_allowed"})
    )
    yield Probe("PUT /v1/jobs", "PUT", "/v1/jobs", frozenset({405}), frozenset({"method_not_allowed"}))


def corpus(photo: bytes) -> list[Probe]:
    """Every probe, built from one real photo."""
    return [
        *damaged_images(photo),
        *lying_headers(photo),
        *bombs_and_floods(),
        *bad_parameters(photo),
        *unknown_ids(),
    ]


def _chunks(data: bytes, size: int = 1024 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _multipart_file(data: bytes) -> bytes:
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="big"\r\n\r\n'
    return head + data + b"\r\n--b--\r\n"


def _parts(count: int, *, files: bool) -> bytes:
    body = io.BytesIO()
    for i in range(count):
        filename = f'; filename="f{i}"' if files else ""
        body.write(f'--b\r\nContent-Disposition: form-data; name="p{i}"{filename}\r\n\r\nv\r\n'.encode())
    body.write(b"--b--\r\n")
    return body.getvalue()
