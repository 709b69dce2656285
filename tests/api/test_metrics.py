"""GET /metrics of the API: submits counted, the queue's depth read from the job table at each scrape,
and who may read it when API keys are on."""

from __future__ import annotations

from tests.api.conftest import (
    DEAD_DATABASE_URL,
    EMBEDDED,
    Stack,
    StackFactory,
    TestClient,
    assert_error,
    complete,
    upload,
)
from visionq import constants

KEY = "metrics-key-0123456789abcdef"


def _scrape(client: TestClient, **headers: str) -> dict[str, float]:
    """The scrape's samples, by `name{labels}` as the text format writes them."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_submits_are_counted_by_model_and_the_queue_is_read_from_the_job_table(
    stack: Stack, samples: dict[str, bytes]
) -> None:
    ids = [upload(stack.client, samples["bus.jpg"]).json()["id"] for _ in range(3)]
    stack.store.claim(ids[1], worker="metrics-test")

    scraped = _scrape(stack.client)

    assert scraped[f'visionq_jobs_submitted_total{{model="{constants.DEFAULT_MODEL}"}}'] == 3
    assert (scraped["visionq_jobs_queued"], scraped["visionq_jobs_running"]) == (2, 1)

    complete(stack, ids[0])
    scraped = _scrape(stack.client)
    assert (scraped["visionq_jobs_queued"], scraped["visionq_jobs_running"]) == (1, 1)
    assert scraped[f'visionq_jobs_submitted_total{{model="{constants.DEFAULT_MODEL}"}}'] == 3


def test_a_refused_submit_and_an_idempotent_replay_count_no_job(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    client = make_stack(EMBEDDED).client
    key = {"Idempotency-Key": "metrics-replay"}
    for _ in range(2):
        response = client.post("/v1/jobs", files={"image": ("b.jpg", samples["bus.jpg"])}, headers=key)
        assert response.status_code == 202
    assert_error(upload(client, b"not an image"), 415, "not_an_image")

    scraped = _scrape(client)

    assert scraped[f'visionq_jobs_submitted_total{{model="{constants.DEFAULT_MODEL}"}}'] == 1
    assert scraped["visionq_jobs_queued"] == 1


def test_with_api_keys_metrics_need_a_key(make_stack: StackFactory) -> None:
    client = make_stack(EMBEDDED, api_keys=KEY).client

    assert_error(client.get("/metrics"), 401, "unauthorized")
    assert_error(client.get("/metrics", headers={"X-API-Key": "not-the-key-0123456789"}), 401, "unauthorized")
    assert "visionq_jobs_queued" in _scrape(client, Authorization=f"Bearer {KEY}")


def test_metrics_public_opens_metrics_and_nothing_else(make_stack: StackFactory) -> None:
    client = make_stack(EMBEDDED, api_keys=KEY, metrics_public=True).client

    assert "visionq_jobs_queued" in _scrape(client)
    assert_error(client.get("/v1/jobs"), 401, "unauthorized")


def test_metrics_stay_out_of_the_api_schema(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_with_the_database_down_the_scrape_serves_all_but_the_queue(make_stack: StackFactory) -> None:
    client = make_stack(EMBEDDED, database_url=DEAD_DATABASE_URL).client

    response = client.get("/metrics")

    assert response.status_code == 200
    assert "# HELP visionq_jobs_submitted_total" in response.text
    assert "visionq_jobs_queued" not in response.text
