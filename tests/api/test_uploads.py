"""Every way an upload can be wrong is refused with its own status and code, and nothing is stored."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from starlette.types import Message, Scope

from tests.api.conftest import EMBEDDED, Stack, StackFactory, assert_error, complete, upload
from tests.helpers import png_bomb, wait_until
from visionq import constants
from visionq.worker.tasks import run_job


@pytest.fixture
def embedded(make_stack: StackFactory) -> Stack:
    """Bad input never reaches the infrastructure, so one backend is enough."""
    return make_stack(EMBEDDED)


def encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def assert_nothing_stored(stack: Stack) -> None:
    assert stack.client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/detect"])
def test_a_multipart_upload_without_an_image_field_is_422(embedded: Stack, path: str) -> None:
    other_file = embedded.client.post(path, files={"picture": ("a.jpg", b"xx", "image/jpeg")})
    error = assert_error(other_file, 422, "invalid_request")
    assert "image" in error["message"]
    assert_nothing_stored(embedded)


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/detect"])
def test_an_upload_that_is_no_multipart_form_is_415(
    embedded: Stack, path: str, samples: dict[str, bytes]
) -> None:
    url_encoded = embedded.client.post(path, data={"conf": "0.5"})
    raw_jpeg = embedded.client.post(
        path, content=samples["zidane.jpg"], headers={"content-type": "image/jpeg"}
    )
    no_body = embedded.client.post(path)

    for response, sent in (
        (url_encoded, "application/x-www-form-urlencoded"),
        (raw_jpeg, "image/jpeg"),
        (no_body, "of no media type"),
    ):
        error = assert_error(response, 415, "unsupported_media_type")
        assert "multipart/form-data" in error["message"] and sent in error["message"]
    assert_nothing_stored(embedded)


def test_an_empty_file_is_400(embedded: Stack) -> None:
    assert_error(upload(embedded.client, b""), 400, "empty")
    assert_nothing_stored(embedded)


def test_a_text_file_is_415_not_an_image(embedded: Stack) -> None:
    response = upload(embedded.client, b"hello, this is not a picture\n" * 10, filename="notes.jpg")

    assert_error(response, 415, "not_an_image")
    assert_nothing_stored(embedded)


@pytest.mark.parametrize("fmt", ["ICO", "PPM"])
def test_an_image_of_an_unsupported_format_is_415(embedded: Stack, fmt: str) -> None:
    error = assert_error(
        upload(embedded.client, encode(Image.new("RGB", (32, 32)), fmt)), 415, "unsupported_format"
    )

    assert fmt in error["message"]
    assert_nothing_stored(embedded)


def test_a_truncated_jpeg_is_422_corrupt(embedded: Stack, samples: dict[str, bytes]) -> None:
    data = samples["bus.jpg"]

    error = assert_error(upload(embedded.client, data[: len(data) // 2]), 422, "corrupt")
    assert "truncated" in error["message"]
    assert_nothing_stored(embedded)


def test_damage_inside_the_pixels_is_accepted_then_fails_the_job_as_corrupt(embedded: Stack) -> None:
    # The API reads only the header (the pixels are decoded once, by the worker); a PNG whose IDAT data
    # is zeroed has an intact header and end, so only decoding can tell, and the job says so.
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[100:160] = bytes(60)

    accepted = upload(embedded.client, bytes(data))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    run_job(embedded.runtime, job_id, worker="api-tests")

    job = embedded.client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "corrupt"
    assert "PNG image is corrupt" in job["error"]["message"]


def test_a_30000_by_30000_png_is_413_before_it_is_decoded(embedded: Stack) -> None:
    error = assert_error(upload(embedded.client, png_bomb(30000)), 413, "too_large")

    assert "30000x30000" in error["message"]
    assert_nothing_stored(embedded)


def test_a_body_over_the_byte_limit_is_413(make_stack: StackFactory, samples: dict[str, bytes]) -> None:
    stack = make_stack(EMBEDDED, max_image_bytes=10_000)

    error = assert_error(upload(stack.client, samples["bus.jpg"]), 413, "too_large")

    assert "10,000" in error["message"]
    assert_nothing_stored(stack)


def test_a_chunked_body_is_refused_once_it_passes_the_limit_not_read_to_the_end(
    make_stack: StackFactory,
) -> None:
    # Straight to the ASGI app: TestClient reads a whole request body before the app sees any of it.
    app = make_stack(EMBEDDED, max_image_bytes=10_000).client.app
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    chunks = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal chunks
        chunks += 1  # 64 KB each, without end
        return {"type": "http.request", "body": head if chunks == 1 else bytes(64 * 1024), "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    anyio.run(app, scope, receive, send)

    assert sent[0]["status"] == 413
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]["code"] == "too_large"
    assert chunks == 3  # the form's head, then 64 KB over the 10,000 + overhead bytes allowed


def test_an_image_just_over_the_byte_limit_is_413(make_stack: StackFactory) -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    stack = make_stack(EMBEDDED, max_image_bytes=len(data) - 1)

    assert_error(upload(stack.client, data), 413, "too_large")
    assert upload(make_stack(EMBEDDED, max_image_bytes=len(data)).client, data).status_code == 202


@pytest.mark.parametrize(
    "field",
    [
        {"conf": "2"},
        {"conf": "-0.1"},
        {"conf": "abc"},
        {"conf": "nan"},
        {"iou": "-1"},
        {"iou": "1.5"},
        {"max_det": "0"},
        {"max_det": "many"},
    ],
)
def test_out_of_range_or_non_numeric_parameters_are_422(
    embedded: Stack, samples: dict[str, bytes], field: dict[str, str]
) -> None:
    error = assert_error(upload(embedded.client, samples["zidane.jpg"], **field), 422, "invalid_request")

    assert next(iter(field)) in error["message"]
    assert_nothing_stored(embedded)


def test_unknown_class_names_are_422_and_listed(embedded: Stack, samples: dict[str, bytes]) -> None:
    response = upload(embedded.client, samples["zidane.jpg"], classes="person,unicorn,dragon")

    error = assert_error(response, 422, "unknown_class")
    assert "unicorn, dragon" in error["message"]
    assert "person," not in error["message"]
    assert_nothing_stored(embedded)


@pytest.mark.parametrize("model", ["yolov99", "../models", "YOLOV4-TINY"])
def test_a_model_not_in_the_cache_is_422(embedded: Stack, samples: dict[str, bytes], model: str) -> None:
    error = assert_error(upload(embedded.client, samples["zidane.jpg"], model=model), 422, "unknown_model")

    assert "yolov4-tiny" in error["message"]  # the models there are
    assert_nothing_stored(embedded)


def test_the_detect_endpoint_refuses_bad_input_the_same_way(
    embedded: Stack, samples: dict[str, bytes]
) -> None:
    assert_error(upload(embedded.client, b"", path="/v1/detect"), 400, "empty")
    assert_error(
        upload(embedded.client, samples["zidane.jpg"], path="/v1/detect", conf=3), 422, "invalid_request"
    )
    response = upload(embedded.client, samples["zidane.jpg"], path="/v1/detect", timeout=61)
    assert_error(response, 422, "invalid_request")
    assert_nothing_stored(embedded)


@pytest.mark.parametrize(
    "query",
    [
        {"status": "sleeping"},
        {"cursor": "not-a-cursor"},
        {"cursor": "bm90fGEtdXVpZA"},
        {"limit": 0},
        {"limit": 101},
    ],
)
def test_bad_list_parameters_are_422(embedded: Stack, query: dict[str, str | int]) -> None:
    assert_error(embedded.client.get("/v1/jobs", params=query), 422, "invalid_request")


def test_unknown_routes_and_methods_answer_in_the_error_shape(embedded: Stack) -> None:
    assert_error(embedded.client.get("/v2/jobs"), 404, "not_found")
    response = embedded.client.put("/v1/jobs")

    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    # Two routes serve /v1/jobs/{id}: the answer names the methods of both, and only methods that work.
    job = f"/v1/jobs/{uuid.uuid4()}"
    response = embedded.client.put(job)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET"
    assert embedded.client.head(job).status_code == 405


def test_a_photo_of_several_megabytes_is_stored_whole(embedded: Stack) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (1600, 1600, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95)
    data = out.getvalue()
    assert len(data) > 2 * 1024 * 1024  # past Starlette's 1 MB in-memory spool and part size

    response = upload(embedded.client, data)

    assert response.status_code == 202, response.text
    assert response.json()["image"]["size_bytes"] == len(data)
    assert embedded.store.image_data(response.json()["image"]["sha256"]) == data


class WatchedSlots(threading.BoundedSemaphore):
    """Decode slots that count who asked for one and who got one."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.asked = 0
        self.granted = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        self.asked += 1
        got = super().acquire(blocking, timeout)
        self.granted += got
        return got

    def __enter__(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return self.acquire(blocking, timeout)  # threading's own __enter__ is the base class's acquire

    def __exit__(self, *_exc: Any) -> None:
        self.release()


def test_full_size_decodes_wait_for_a_free_slot_so_image_memory_stays_bounded(
    embedded: Stack, samples: dict[str, bytes]
) -> None:
    # Annotated images are decoded at full size in the API (uploads are only probed).
    job_id = upload(embedded.client, samples["bus.jpg"]).json()["id"]
    complete(embedded, job_id)
    app = embedded.client.app
    assert isinstance(app, FastAPI)
    slots = WatchedSlots(constants.API_DECODE_SLOTS)
    app.state.services = dataclasses.replace(app.state.services, decode_slots=slots)
    for _ in range(constants.API_DECODE_SLOTS):  # every slot taken, as by as many large decodes
        slots.acquire()
    answers: list[int] = []
    submitter = threading.Thread(
        target=lambda: answers.append(embedded.client.get(f"/v1/jobs/{job_id}/annotated").status_code)
    )
    try:
        submitter.start()
        wait_until(
            lambda: slots.asked > constants.API_DECODE_SLOTS, timeout_s=30, what="the request asks for a slot"
        )
        # It asked and waits: no slot is free, so it has neither one nor an answer.
        assert slots.granted == constants.API_DECODE_SLOTS and answers == []
    finally:
        for _ in range(constants.API_DECODE_SLOTS):
            slots.release()
    submitter.join(timeout=30)
    assert answers == [200]
    assert slots.granted == constants.API_DECODE_SLOTS + 1


def test_an_upload_takes_no_decode_slot(embedded: Stack, samples: dict[str, bytes]) -> None:
    app = embedded.client.app
    assert isinstance(app, FastAPI)
    slots = WatchedSlots(constants.API_DECODE_SLOTS)
    app.state.services = dataclasses.replace(app.state.services, decode_slots=slots)

    assert upload(embedded.client, samples["bus.jpg"]).status_code == 202
    assert slots.asked == 0
