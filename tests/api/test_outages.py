"""A broker or database that is down is a 503 with Retry-After, never a 500, and leaves no job behind."""

from __future__ import annotations

import uuid

import pytest

from tests.api.conftest import (
    DEAD_BROKER_URL,
    DEAD_DATABASE_URL,
    EMBEDDED,
    StackFactory,
    assert_error,
    upload,
)


def test_a_dead_broker_makes_submissions_503_and_leaves_no_job(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED, broker_url=DEAD_BROKER_URL)

    for path in ("/v1/jobs", "/v1/detect"):
        response = upload(stack.client, samples["zidane.jpg"], path=path)
        assert_error(response, 503, "broker_unavailable")
        assert int(response.headers["retry-after"]) > 0

    assert stack.client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}
    jobs, _ = stack.store.page(limit=10)
    assert jobs == []


def test_a_dead_broker_makes_the_api_not_ready(make_stack: StackFactory) -> None:
    stack = make_stack(EMBEDDED, broker_url=DEAD_BROKER_URL)

    response = stack.client.get("/readyz")

    error = assert_error(response, 503, "broker_unavailable")
    assert "broker" in error["message"] and "database" not in error["message"]
    assert "retry-after" in response.headers
    assert stack.client.get("/healthz").status_code == 200


def test_a_dead_database_makes_the_api_not_ready(make_stack: StackFactory) -> None:
    stack = make_stack(EMBEDDED, database_url=DEAD_DATABASE_URL)

    response = stack.client.get("/readyz")

    error = assert_error(response, 503, "database_unavailable")
    assert "database" in error["message"]
    assert "retry-after" in response.headers


def test_broker_and_database_both_dead_are_both_named(make_stack: StackFactory) -> None:
    stack = make_stack(EMBEDDED, database_url=DEAD_DATABASE_URL, broker_url=DEAD_BROKER_URL)

    error = assert_error(stack.client.get("/readyz"), 503, "service_unavailable")

    assert "database" in error["message"] and "broker" in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs/{id}/annotated"),
        ("DELETE", "/v1/jobs/{id}"),
        ("GET", "/v1/jobs"),
    ],
)
def test_a_dead_database_makes_job_reads_503_with_retry_after(
    make_stack: StackFactory, method: str, path: str
) -> None:
    stack = make_stack(EMBEDDED, database_url=DEAD_DATABASE_URL)

    response = stack.client.request(method, path.format(id=uuid.uuid4()))

    assert_error(response, 503, "database_unavailable")
    assert int(response.headers["retry-after"]) > 0


def test_a_dead_database_makes_submissions_503(make_stack: StackFactory, samples: dict[str, bytes]) -> None:
    stack = make_stack(EMBEDDED, database_url=DEAD_DATABASE_URL)

    response = upload(stack.client, samples["zidane.jpg"])

    assert_error(response, 503, "database_unavailable")
    assert not list((stack.settings.broker_dir / "messages").iterdir())  # nothing published
