"""Idempotency-Key on POST /v1/jobs and /v1/detect: a retried submit gets its first job, never a second."""

from __future__ import annotations

from tests.api.conftest import EMBEDDED, Response, Stack, StackFactory, TestClient, assert_error, complete
from visionq.store import JobStatus


def _submit(client: TestClient, data: bytes, key: str, *, path: str = "/v1/jobs", **form: str) -> Response:
    response: Response = client.post(
        path,
        files={"image": ("image.jpg", data, "application/octet-stream")},
        data=form,
        headers={"Idempotency-Key": key},
    )
    return response


def test_the_same_submit_sent_again_with_its_key_returns_the_first_job_and_publishes_nothing(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED)  # its messages are files that can be counted
    first = _submit(stack.client, samples["zidane.jpg"], "upload-7f3a", conf="0.4")
    again = _submit(stack.client, samples["zidane.jpg"], "upload-7f3a", conf="0.4")

    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert len(stack.client.get("/v1/jobs").json()["jobs"]) == 1
    assert len(list((stack.settings.broker_dir / "messages").iterdir())) == 1


def test_a_key_reused_for_another_request_is_refused_with_409(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    assert _submit(stack.client, samples["zidane.jpg"], "k-1").status_code == 202

    assert_error(_submit(stack.client, samples["bus.jpg"], "k-1"), 409, "idempotency_key_reused")
    assert_error(
        _submit(stack.client, samples["zidane.jpg"], "k-1", conf="0.9"), 409, "idempotency_key_reused"
    )
    assert len(stack.client.get("/v1/jobs").json()["jobs"]) == 1


def test_a_malformed_key_is_refused_with_422(client: TestClient, samples: dict[str, bytes]) -> None:
    for key in (b"", b"has space", b"x" * 256, "naïve".encode()):
        response = client.post(
            "/v1/jobs",
            files={"image": ("image.jpg", samples["zidane.jpg"], "application/octet-stream")},
            headers={b"Idempotency-Key": key},  # bytes: sent as they are
        )
        assert_error(response, 422, "invalid_request")
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_detect_sent_again_with_its_key_answers_with_the_first_job_finished(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    queued = _submit(stack.client, samples["zidane.jpg"], "detect-1", path="/v1/detect", timeout="0")
    assert queued.status_code == 202
    complete(stack, queued.json()["id"])

    again = _submit(stack.client, samples["zidane.jpg"], "detect-1", path="/v1/detect", timeout="5")

    assert again.status_code == 200, again.text
    assert again.json()["id"] == queued.json()["id"]
    assert again.json()["status"] == JobStatus.SUCCEEDED.value
    assert again.headers["idempotent-replayed"] == "true"
    assert len(stack.client.get("/v1/jobs").json()["jobs"]) == 1
