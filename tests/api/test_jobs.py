"""/v1/jobs over both backends: submit, read, annotate, list, cancel and delete."""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime

import pytest
from PIL import Image

from tests.api.conftest import EMBEDDED, Stack, StackFactory, TestClient, assert_error, complete, upload
from visionq import constants
from visionq.store import JobStatus


def test_a_submitted_image_becomes_a_queued_job_at_its_location(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    data = samples["bus.jpg"]

    response = upload(stack.client, data)

    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["model"] == constants.DEFAULT_MODEL
    assert job["params"] == {
        "conf": constants.DEFAULT_CONFIDENCE,
        "iou": constants.DEFAULT_IOU,
        "classes": None,
        "max_det": constants.DEFAULT_MAX_DETECTIONS,
    }
    assert job["image"] == {
        "width": 810,
        "height": 1080,
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "image/jpeg",
        "size_bytes": len(data),
    }
    assert job["detections"] is None
    assert job["error"] is None
    assert job["timings_ms"] is None
    assert job["attempts"] == 0
    assert job["started_at"] is None and job["finished_at"] is None
    assert datetime.fromisoformat(job["created_at"]).utcoffset() is not None
    assert stack.client.get(response.headers["location"]).json() == job


def test_each_accepted_job_is_logged_once_with_its_id_and_never_its_bytes(
    stack: Stack, samples: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="visionq.api.submit"):
        job = upload(stack.client, samples["zidane.jpg"]).json()

    lines = [r.getMessage() for r in caplog.records if r.name == "visionq.api.submit"]
    assert lines == [f"job {job['id']} queued: {constants.DEFAULT_MODEL}, image/jpeg 1280x720, 168949 bytes"]


def test_the_job_id_is_published_to_the_broker(make_stack: StackFactory, samples: dict[str, bytes]) -> None:
    stack = make_stack(EMBEDDED)  # its messages are files that can be looked at

    job_id = upload(stack.client, samples["zidane.jpg"]).json()["id"]

    messages = list((stack.settings.broker_dir / "messages").iterdir())
    assert len(messages) == 1
    assert job_id in messages[0].read_text()


def test_detection_parameters_are_validated_and_stored_with_the_job(
    client: TestClient, samples: dict[str, bytes]
) -> None:
    response = upload(
        client, samples["bus.jpg"], conf=0.5, iou=0.3, classes=" person, bus ,person", max_det=10
    )

    assert response.status_code == 202, response.text
    assert response.json()["params"] == {"conf": 0.5, "iou": 0.3, "classes": ["person", "bus"], "max_det": 10}


def test_a_completed_job_shows_its_detections_and_timings(stack: Stack, samples: dict[str, bytes]) -> None:
    job_id = upload(stack.client, samples["bus.jpg"], classes="person,bus").json()["id"]

    complete(stack, job_id)
    job = stack.client.get(f"/v1/jobs/{job_id}").json()

    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert {d["label"] for d in job["detections"]} == {"person", "bus"}
    first = job["detections"][0]
    assert set(first) == {"label", "class_id", "confidence", "box"}
    assert set(first["box"]) == {"x1", "y1", "x2", "y2"}
    assert job["timings_ms"]["inference"] > 0
    assert job["finished_at"] is not None


def test_the_uploaded_image_comes_back_byte_for_byte_with_its_content_type(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    job_id = upload(stack.client, samples["bus.jpg"], filename="bus.png").json()["id"]
    response = stack.client.get(f"/v1/jobs/{job_id}/image")
    assert response.status_code == 200
    assert response.content == samples["bus.jpg"]
    assert response.headers["content-type"] == "image/jpeg"  # found in the bytes, not the file name
    assert_error(stack.client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/image"), 404, "not_found")


def test_the_annotated_image_is_a_full_resolution_jpeg_once_the_job_succeeded(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    job_id = upload(stack.client, samples["bus.jpg"]).json()["id"]
    assert_error(stack.client.get(f"/v1/jobs/{job_id}/annotated"), 409, "conflict")

    complete(stack, job_id)
    response = stack.client.get(f"/v1/jobs/{job_id}/annotated")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as annotated:
        assert annotated.format == "JPEG"
        assert annotated.size == (810, 1080)


def test_an_unknown_or_malformed_job_id_is_404(client: TestClient) -> None:
    for path in (
        "/v1/jobs/0b6e5f0e-63a4-4c4e-9c53-7e0b7f6a1c2d",
        "/v1/jobs/not-a-uuid",
        "/v1/jobs/0b6e5f0e-63a4-4c4e-9c53-7e0b7f6a1c2d/annotated",
        "/v1/jobs/%00%ff",
    ):
        assert_error(client.get(path), 404, "not_found")
    assert_error(client.delete("/v1/jobs/not-a-uuid"), 404, "not_found")


def test_jobs_are_listed_newest_first_a_page_at_a_time(client: TestClient, samples: dict[str, bytes]) -> None:
    created = [upload(client, samples["zidane.jpg"]).json()["id"] for _ in range(5)]

    seen: list[str] = []
    pages = []
    cursor: str | None = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        pages.append(len(page["jobs"]))
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == [2, 2, 1]
    assert seen == created[::-1]


def test_jobs_can_be_listed_by_status(client: TestClient, samples: dict[str, bytes]) -> None:
    first, second = (upload(client, samples["zidane.jpg"]).json()["id"] for _ in range(2))
    client.delete(f"/v1/jobs/{first}")

    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()

    assert [job["id"] for job in cancelled["jobs"]] == [first]
    assert [job["id"] for job in queued["jobs"]] == [second]
    assert queued["next_cursor"] is None


def test_deleting_a_queued_job_cancels_it_and_it_never_runs(stack: Stack, samples: dict[str, bytes]) -> None:
    job_id = upload(stack.client, samples["zidane.jpg"]).json()["id"]

    response = stack.client.delete(f"/v1/jobs/{job_id}")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    assert stack.client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert stack.store.claim(job_id, worker="late-worker") is None


def test_deleting_a_finished_job_removes_it_and_its_image(stack: Stack, samples: dict[str, bytes]) -> None:
    job = upload(stack.client, samples["zidane.jpg"]).json()
    assert stack.client.delete(f"/v1/jobs/{job['id']}").status_code == 200  # cancelled: finished

    response = stack.client.delete(f"/v1/jobs/{job['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert_error(stack.client.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert_error(stack.client.delete(f"/v1/jobs/{job['id']}"), 404, "not_found")
    assert stack.store.image_data(job["image"]["sha256"]) is None


def test_a_running_job_cannot_be_deleted(stack: Stack, samples: dict[str, bytes]) -> None:
    job_id = upload(stack.client, samples["zidane.jpg"]).json()["id"]
    assert stack.store.claim(job_id, worker="busy-worker") is not None

    error = assert_error(stack.client.delete(f"/v1/jobs/{job_id}"), 409, "conflict")

    assert "running" in error["message"]
    assert stack.store.get(job_id) is not None
    assert stack.store.get(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
