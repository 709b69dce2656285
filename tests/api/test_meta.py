"""Models, health and the API's own documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import Stack, TestClient
from visionq import constants
from visionq.api.app import create_default_app


def test_the_models_in_the_cache_are_listed_with_their_classes(client: TestClient) -> None:
    body = client.get("/v1/models").json()

    assert body["default"] == constants.DEFAULT_MODEL
    (model,) = (m for m in body["models"] if m["name"] == constants.DEFAULT_MODEL)
    assert model["family"] == "darknet"
    assert model["input"] == {"width": 416, "height": 416, "preprocess": "resize"}
    assert len(model["classes"]) == 80
    assert model["classes"][0] == "person"
    assert model["source"].startswith("pypi:")


def test_healthz_answers_ok_without_touching_anything(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_ok_when_database_and_broker_answer(stack: Stack) -> None:
    response = stack.client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_the_openapi_docs_describe_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    assert client.get("/docs").status_code == 200
    assert schema["info"]["title"] == "visionq"
    assert set(schema["paths"]) == {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/annotated",
        "/v1/jobs/{job_id}/image",
        "/v1/jobs/{job_id}/events",
        "/v1/detect",
        "/v1/models",
        "/healthz",
        "/readyz",
    }
    upload_form = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_form
    events = schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert set(events) == {"text/event-stream"}


def test_the_default_app_builds_everything_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(tmp_path / "data"))
    for name in ("VISIONQ_DATABASE_URL", "VISIONQ_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)

    with TestClient(create_default_app()) as client:
        ready = client.get("/readyz")
        models = client.get("/v1/models").json()
        jobs = client.get("/v1/jobs").json()

    assert ready.status_code == 200, ready.text
    assert models == {"models": [], "default": constants.DEFAULT_MODEL}  # its data dir has none pulled
    assert jobs == {"jobs": [], "next_cursor": None}  # the schema was migrated
    assert (tmp_path / "data" / "visionq.db").is_file()
