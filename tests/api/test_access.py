"""API keys, per-client rate limits and the bounds on queued jobs, through the real app."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from starlette.types import Message

from tests.api.conftest import EMBEDDED, Response, Stack, StackFactory, TestClient, assert_error, complete
from tests.helpers import settings_of
from visionq.api.access import AccessGuard, ApiKeys, hash_key, new_key, read_key_file
from visionq.store.tables import JobRow

KEY_A = "alpha-key-0123456789abcdef"
KEY_B = "bravo-key-0123456789abcdef"


def _upload(client: TestClient, data: bytes, key: str | None, **headers: str) -> Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response: Response = client.post(
        "/v1/jobs", files={"image": ("image.jpg", data, "application/octet-stream")}, headers=headers
    )
    return response


def _keyed(make_stack: StackFactory, backend: str = EMBEDDED, **settings: Any) -> Stack:
    return make_stack(backend, api_keys=f"{KEY_A},{KEY_B}", **settings)


def test_with_api_keys_every_v1_route_answers_401_without_a_valid_key(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    client = _keyed(make_stack).client
    job_id = "3f2b8a56-1d2c-4a2e-9a43-6c1b1e5a9f00"
    for method, path in [
        ("GET", "/v1/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/annotated"),
        ("DELETE", f"/v1/jobs/{job_id}"),
        ("GET", "/v1/models"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/detect"),
        ("GET", "/v1/no-such-route"),
    ]:
        for headers in ({}, {"Authorization": "Bearer not-a-key-of-this-api"}, {"X-API-Key": KEY_A[:-1]}):
            response = client.request(method, path, headers=headers)
            error = assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == 'Bearer realm="visionq"'
            assert "needs a key" in error["message"]

    assert _upload(client, samples["zidane.jpg"], None).status_code == 401
    assert _upload(client, samples["zidane.jpg"], KEY_A).status_code == 202
    assert client.get("/v1/jobs", headers={"X-API-Key": KEY_B}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": f"bearer {KEY_B}"}).status_code == 200


def test_health_docs_and_schema_stay_open_and_the_schema_documents_the_keys(
    make_stack: StackFactory,
) -> None:
    client = _keyed(make_stack).client
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    submit = schema["paths"]["/v1/jobs"]["post"]
    assert {"401", "429"} <= set(submit["responses"])
    assert submit["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert "security" not in schema["paths"]["/readyz"]["get"]


def test_without_keys_the_schema_asks_for_none(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/v1/jobs"]["post"]["responses"]


def test_a_request_without_a_key_is_answered_before_a_byte_of_its_body_is_read() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the request went past the guard")

    async def receive() -> Message:
        raise AssertionError("the guard read the body")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    keys = ApiKeys.from_settings(settings_of(api_keys=KEY_A))
    guard = AccessGuard(app, keys=keys, limits=None)
    headers = [(b"content-length", b"20000000"), (b"content-type", b"multipart/form-data; boundary=x")]
    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": headers, "query_string": b""}
    anyio.run(guard, scope, receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401


def test_keys_from_a_file_of_hashes_name_the_jobs_they_submit(
    make_stack: StackFactory, samples: dict[str, bytes], tmp_path: Path
) -> None:
    key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# visionq API keys\n\n{hash_key(key)} ci-runner  # added 2026-12-01\n")
    stack = make_stack(EMBEDDED, api_keys_file=keys_file)

    assert _upload(stack.client, samples["zidane.jpg"], KEY_A).status_code == 401  # not in the file
    accepted = _upload(stack.client, samples["zidane.jpg"], key)
    assert accepted.status_code == 202
    with stack.engine.connect() as conn:
        assert conn.execute(select(JobRow.client)).scalar_one() == "ci-runner"


def test_a_malformed_key_file_is_refused_with_its_line_number(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{hash_key(KEY_A)} fine\n{hash_key(KEY_B)[:40]} cut-short\n")
    with pytest.raises(ValueError, match=r"keys:2: expected `sha256-hex name`"):
        read_key_file(keys_file)
    keys_file.write_text(f"{hash_key(KEY_A)} spaces in name\n")
    with pytest.raises(ValueError, match=r"keys:1:"):
        read_key_file(keys_file)


def test_a_key_matches_only_itself_among_several() -> None:
    keys = ApiKeys.from_settings(settings_of(api_keys=f"{KEY_A}, {KEY_B}"))
    assert keys is not None
    assert keys.identify(KEY_A) == f"key-{hash_key(KEY_A)[:8]}"
    assert keys.identify(KEY_B) == f"key-{hash_key(KEY_B)[:8]}"
    for other in (KEY_A[:-1], KEY_A + "0", "", hash_key(KEY_A)):
        assert keys.identify(other) is None


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("api_keys", "short-key"),
        ("api_keys", f"{KEY_A},tooshort"),
        ("rate_limit", "lots"),
        ("submit_rate_limit", "10 per fortnight"),
    ],
)
def test_weak_keys_and_unreadable_limits_fail_at_start(setting: str, value: str) -> None:
    with pytest.raises(ValidationError, match=setting):
        settings_of(**{setting: value})


def test_keys_never_reach_the_logs(
    make_stack: StackFactory, samples: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    client = _keyed(make_stack).client
    with caplog.at_level(logging.DEBUG):
        assert _upload(client, samples["zidane.jpg"], KEY_A).status_code == 202
        assert _upload(client, samples["zidane.jpg"], KEY_A[:-1]).status_code == 401
    assert caplog.records  # the accepted job was logged
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert KEY_A not in logged and KEY_A[:-1] not in logged


def test_idempotency_keys_are_each_api_keys_own(make_stack: StackFactory, samples: dict[str, bytes]) -> None:
    client = _keyed(make_stack).client
    first = _upload(client, samples["zidane.jpg"], KEY_A, **{"Idempotency-Key": "batch-1"})
    other_client = _upload(client, samples["bus.jpg"], KEY_B, **{"Idempotency-Key": "batch-1"})
    reused = _upload(client, samples["bus.jpg"], KEY_A, **{"Idempotency-Key": "batch-1"})
    replay = _upload(client, samples["zidane.jpg"], KEY_A, **{"Idempotency-Key": "batch-1"})

    assert (first.status_code, other_client.status_code) == (202, 202)
    assert first.json()["id"] != other_client.json()["id"]
    error = assert_error(reused, 409, "idempotency_key_reused")
    assert "'batch-1'" in error["message"] and "key-" not in error["message"]
    assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]


def test_over_its_rate_a_client_gets_429_with_retry_after_and_others_go_on(make_stack: StackFactory) -> None:
    client = _keyed(make_stack, rate_limit="3/minute").client
    answers = [client.get("/v1/jobs", headers={"X-API-Key": KEY_A}) for _ in range(4)]

    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    error = assert_error(answers[3], 429, "rate_limited")
    assert "3 per 1 minute" in error["message"]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60
    assert client.get("/v1/jobs", headers={"X-API-Key": KEY_B}).status_code == 200
    assert client.get("/healthz").status_code == 200  # not counted, not limited


def test_without_keys_the_rate_is_counted_per_address(make_stack: StackFactory) -> None:
    client = make_stack(EMBEDDED, rate_limit="2/minute").client
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]


def test_the_submit_limit_counts_only_submits(make_stack: StackFactory, samples: dict[str, bytes]) -> None:
    client = _keyed(make_stack, submit_rate_limit="2/minute").client
    statuses = [_upload(client, samples["zidane.jpg"], KEY_A).status_code for _ in range(3)]

    assert statuses == [202, 202, 429]
    assert client.get("/v1/jobs", headers={"X-API-Key": KEY_A}).status_code == 200
    assert _upload(client, samples["zidane.jpg"], KEY_B).status_code == 202
    jobs = client.get("/v1/jobs", headers={"X-API-Key": KEY_A}).json()["jobs"]
    assert len(jobs) == 3  # the refused submit made no job


@pytest.mark.parametrize(
    "backend", [EMBEDDED, pytest.param("services", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])]
)
def test_a_full_queue_answers_503_and_takes_submits_again_once_jobs_ran(
    make_stack: StackFactory, samples: dict[str, bytes], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = make_stack(backend, max_queued_jobs=2)
    ids = [_upload(stack.client, samples["zidane.jpg"], None).json()["id"] for _ in range(2)]

    refused = _upload(stack.client, samples["zidane.jpg"], None)
    assert_error(refused, 503, "queue_full")
    assert refused.headers["retry-after"] == "5"
    assert len(stack.client.get("/v1/jobs").json()["jobs"]) == 2

    complete(stack, ids[0])
    bounds = stack.client.app.state.services.bounds  # type: ignore[attr-defined]
    monkeypatch.setattr(bounds, "_counted_at", None)  # as a second later: the next submit counts again
    assert _upload(stack.client, samples["zidane.jpg"], None).status_code == 202


def test_one_key_at_its_bound_of_queued_jobs_gets_429_and_leaves_room_for_others(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    client = _keyed(make_stack, max_queued_jobs_per_key=2).client
    assert [_upload(client, samples["zidane.jpg"], KEY_A).status_code for _ in range(2)] == [202, 202]

    refused = _upload(client, samples["zidane.jpg"], KEY_A)
    assert_error(refused, 429, "too_many_queued")
    assert refused.headers["retry-after"] == "5"
    assert _upload(client, samples["zidane.jpg"], KEY_B).status_code == 202
