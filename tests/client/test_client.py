"""`VisionqClient` against the real service (submit, replay, follow a job to its end), and against a
network that breaks where the test says (retries, a stream cut off): what a real server cannot be
made to do on cue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Service, free_port, running_service
from visionq.client import ApiError, VisionqClient
from visionq.client.client import CONNECTION_ERROR, WAIT_TIMEOUT
from visionq.models.cache import ModelCache


@pytest.fixture(scope="module", params=["embedded"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache
) -> Iterator[Service]:
    with running_service(request, tmp_path_factory.mktemp("client"), model_cache) as running:
        yield running


@pytest.fixture
def client(service: Service) -> Iterator[VisionqClient]:
    with VisionqClient(str(service.client.base_url)) as client:
        yield client


@pytest.mark.slow
def test_an_upload_sent_again_with_its_key_gets_the_same_job_back(
    client: VisionqClient, sample_paths: dict[str, Path]
) -> None:
    bus = sample_paths["bus.jpg"]
    first = client.submit(bus, conf=0.3, idempotency_key="client-test-replay")
    again = client.submit(bus, conf=0.3, idempotency_key="client-test-replay")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.job["id"] == first.job["id"]
    with pytest.raises(ApiError) as refused:
        client.submit(bus, conf=0.4, idempotency_key="client-test-replay")
    assert (refused.value.status, refused.value.code) == (409, "idempotency_key_reused")


@pytest.mark.slow
def test_a_job_is_followed_to_its_end_with_its_detections(
    client: VisionqClient, sample_paths: dict[str, Path]
) -> None:
    job = client.submit(sample_paths["bus.jpg"]).job
    assert job["status"] == "queued"

    ended = client.wait(job["id"], timeout_s=120)

    assert ended["status"] == "succeeded"
    assert {"bus", "person"} <= {d["label"] for d in ended["detections"]}
    assert client.get(job["id"]) == ended


@pytest.mark.slow
def test_the_event_stream_starts_with_the_current_state_and_ends_after_the_last(
    client: VisionqClient, sample_paths: dict[str, Path]
) -> None:
    job_id = client.submit(sample_paths["zidane.jpg"]).job["id"]
    client.wait(job_id, timeout_s=120)

    # The job has ended: its stream is that one state, and then the server closes it.
    states = [job for job in client.events(job_id) if job is not None]

    assert [(s["id"], s["status"]) for s in states] == [(job_id, "succeeded")]


@pytest.mark.slow
def test_an_unknown_job_is_the_apis_not_found(client: VisionqClient) -> None:
    with pytest.raises(ApiError) as missing:
        client.get("no-such-job")

    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_a_server_that_is_down_is_a_connection_error_at_once() -> None:
    slept: list[float] = []
    with VisionqClient(f"http://127.0.0.1:{free_port()}", sleep=slept.append) as client:
        with pytest.raises(ApiError) as down:
            client.check()

    assert down.value.code == CONNECTION_ERROR
    assert slept == []


# ---- a network that misbehaves on cue (httpx.MockTransport stands for the server) -----------------

Handler = Callable[[httpx.Request], httpx.Response]


def _job(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "detections": None, "error": None, **fields}


def _answers(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering each request with the next of `responses`, and the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return queue.pop(0)

    return handle, seen


def _client(handler: Handler, slept: list[float], **options: Any) -> VisionqClient:
    return VisionqClient(
        "http://visionq.test", transport=httpx.MockTransport(handler), sleep=slept.append, **options
    )


class _CutOff(httpx.SyncByteStream):
    """A response body that sends `data` and then loses its connection."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self._data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _sse(*jobs: dict[str, Any]) -> bytes:
    return b"".join(
        b": keep-alive\n\nevent: job\ndata: " + json.dumps(job).encode() + b"\n\n" for job in jobs
    )


def test_a_503_is_sent_again_after_its_retry_after_and_an_hour_is_bounded(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"jpeg bytes")
    busy = {"error": {"code": "queue_full", "message": "later"}}
    handler, seen = _answers(
        httpx.Response(503, json=busy, headers={"Retry-After": "2"}),
        httpx.Response(429, json=busy, headers={"Retry-After": "3600"}),
        httpx.Response(202, json=_job("queued"), headers={"Idempotent-Replayed": "true"}),
    )
    slept: list[float] = []
    with _client(handler, slept) as client:
        submitted = client.submit(image, model="m", conf=0.5, idempotency_key="k")

    assert slept == [2.0, 60.0]
    assert (client.retries, submitted.replayed, submitted.job["id"]) == (2, True, "j1")
    assert len(seen) == 3
    # Every try sent the whole file, with the same key and form.
    for request in seen:
        assert request.headers["Idempotency-Key"] == "k"
        assert b"jpeg bytes" in request.content
        assert b'name="conf"\r\n\r\n0.5' in request.content


def test_retries_are_bounded_and_the_last_answer_is_the_error(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    limited = httpx.Response(429, json={"error": {"code": "rate_limited", "message": "slow down"}})
    handler, seen = _answers(*[limited] * 3)
    slept: list[float] = []
    with _client(handler, slept, attempts=3) as client, pytest.raises(ApiError) as refused:
        client.submit(image, idempotency_key="k")

    assert (refused.value.status, refused.value.code, len(seen)) == (429, "rate_limited", 3)
    assert slept == [1.0, 1.0]  # no Retry-After: a second


def test_an_upload_without_a_key_is_not_sent_twice_when_its_answer_is_lost(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    calls: list[str] = []

    def lost(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ReadError("connection reset")

    slept: list[float] = []
    with _client(lost, slept) as client:
        with pytest.raises(ApiError) as lost_once:
            client.submit(image)
        assert (lost_once.value.code, len(calls)) == (CONNECTION_ERROR, 1)
        with pytest.raises(ApiError):
            client.submit(image, idempotency_key="k")  # harmless to send again: it is
    assert len(calls) == 1 + 5
    assert slept == [0.5, 1.0, 2.0, 4.0]


def test_a_stream_that_breaks_is_followed_by_one_get_and_a_new_stream() -> None:
    handler, seen = _answers(
        httpx.Response(200, stream=_CutOff(_sse(_job("queued")))),
        httpx.Response(200, json=_job("running")),
        httpx.Response(200, content=_sse(_job("running"), _job("succeeded", detections=[]))),
    )
    slept: list[float] = []
    with _client(handler, slept) as client:
        job = client.wait("j1", timeout_s=60)

    assert (job["status"], job["detections"]) == ("succeeded", [])
    assert [r.url.path for r in seen] == ["/v1/jobs/j1/events", "/v1/jobs/j1", "/v1/jobs/j1/events"]
    assert seen[0].headers["Accept"] == "text/event-stream"
    assert slept == [0.2]


def test_a_stream_that_ends_in_the_job_having_ended_needs_no_get() -> None:
    handler, seen = _answers(httpx.Response(200, stream=_CutOff(_sse(_job("queued"), _job("failed")))))
    with _client(handler, []) as client:
        assert client.wait("j1", timeout_s=60)["status"] == "failed"
    assert len(seen) == 1


def test_a_job_deleted_while_it_is_followed_is_the_streams_error_event() -> None:
    gone = {"error": {"code": "not_found", "message": "no job with id 'j1'"}}
    body = _sse(_job("queued")) + b"event: error\ndata: " + json.dumps(gone).encode() + b"\n\n"
    handler, _ = _answers(httpx.Response(200, content=body))
    with _client(handler, []) as client:
        stream = client.events("j1")
        assert next(stream) is None  # the keep-alive before the first event
        assert next(stream) == _job("queued")
        with pytest.raises(ApiError) as deleted:
            next(stream)

    assert (deleted.value.status, deleted.value.code) == (None, "not_found")


def test_a_job_that_does_not_end_in_time_is_a_wait_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(503, json={"error": {"code": "service_unavailable", "message": "-"}})
        return httpx.Response(200, json=_job("running"))

    transport = httpx.MockTransport(handle)
    with VisionqClient(
        "http://visionq.test", transport=transport, sleep=sleep, clock=lambda: now[0]
    ) as client:
        with pytest.raises(ApiError) as late:
            client.wait("j1", timeout_s=10)

    assert late.value.code == WAIT_TIMEOUT
    assert "still running after 10 s" in late.value.message
    assert 5.0 <= now[0] <= 10.0


def test_a_refused_key_on_the_stream_is_the_gets_refusal() -> None:
    refused = {"error": {"code": "unauthorized", "message": "no key"}}
    handler, _ = _answers(httpx.Response(401, json=refused), httpx.Response(401, json=refused))
    with _client(handler, []) as client, pytest.raises(ApiError) as denied:
        client.wait("j1", timeout_s=60)

    assert (denied.value.status, denied.value.code) == (401, "unauthorized")


def test_an_answer_that_is_not_the_apis_is_a_bad_response() -> None:
    handler, _ = _answers(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with _client(handler, []) as client, pytest.raises(ApiError) as odd:
        client.get("j1")

    assert (odd.value.status, odd.value.code) == (502, "bad_response")
    assert "Bad Gateway" in odd.value.message


def test_the_api_key_goes_as_a_bearer_token() -> None:
    handler, seen = _answers(httpx.Response(200, json={"models": []}))
    with VisionqClient(
        "http://visionq.test", api_key="k" * 24, transport=httpx.MockTransport(handler)
    ) as client:
        client.check()

    assert seen[0].headers["Authorization"] == "Bearer " + "k" * 24
