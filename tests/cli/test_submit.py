"""`visionq submit` against the real service (`visionq api` + `visionq worker`, embedded backend): files,
folders and patterns in, a summary and a results file out, and a rerun that sends nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.e2e.stack import VISIONQ, Service, free_port, running_service
from tests.helpers import wait_until
from visionq.cli import app
from visionq.models.cache import ModelCache

API_KEY = "submit-test-key-0123456789abcdef"


@pytest.fixture(scope="module", params=["embedded"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache
) -> Iterator[Service]:
    with running_service(request, tmp_path_factory.mktemp("submit"), model_cache) as running:
        yield running


@pytest.fixture(scope="module", params=["embedded"])
def keyed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache
) -> Iterator[Service]:
    """A service that wants an API key and takes one submit per second from it."""
    folder = tmp_path_factory.mktemp("submit-keyed")
    with running_service(
        request, folder, model_cache, api_keys=API_KEY, submit_rate_limit="1/second"
    ) as running:
        yield running


@pytest.fixture
def photos(tmp_path: Path, sample_paths: dict[str, Path]) -> Path:
    """photos/bus.jpg, photos/more/zidane.JPG and photos/readme.txt (which a folder walk leaves out)."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    (folder / "bus.jpg").write_bytes(sample_paths["bus.jpg"].read_bytes())
    (folder / "more" / "zidane.JPG").write_bytes(sample_paths["zidane.jpg"].read_bytes())
    (folder / "readme.txt").write_text("not a photo")
    return folder


def _submit(*args: str, server: Service | str | None = None, **env: str | None) -> Result:
    """`visionq submit ARGS` in this process, on a terminal wide enough that no table cell wraps."""
    url = str(server.client.base_url) if isinstance(server, Service) else server
    options = ["--server", url] if url is not None else []
    environ = {"VISIONQ_SERVER": None, "VISIONQ_API_KEY": None, "COLUMNS": "250", **env}
    return CliRunner().invoke(app, ["submit", *args, *options], env=environ)


def _job_ids(service: Service, **headers: str) -> set[str]:
    """Every job the service has, through GET /v1/jobs a page at a time."""
    ids: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = service.client.get("/v1/jobs", params=params, headers=headers).json()
        ids.update(job["id"] for job in page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_folder_a_pattern_and_a_file_go_through_once_each_with_their_labels_counted(
    service: Service, photos: Path, tmp_path: Path, sample_paths: dict[str, Path]
) -> None:
    out = tmp_path / "results.jsonl"
    before = _job_ids(service)
    pattern = str(photos / "**" / "*.JPG")  # quoted: the shell did not expand it
    # bus.jpg is named twice (the folder and the file), zidane.JPG twice (the folder and the pattern).
    result = _submit(
        str(photos), pattern, str(photos / "bus.jpg"), "--wait", "--out", str(out), "--conf", "0.3",
        VISIONQ_SERVER=str(service.client.base_url),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "2 files, 2 succeeded, 0 failed" in result.stdout
    lines = _lines(out)
    assert sorted(line["path"] for line in lines) == [
        str(photos / "bus.jpg"),
        str(photos / "more" / "zidane.JPG"),
    ]
    assert {line["status"] for line in lines} == {"succeeded"}
    by_path = {line["path"]: line for line in lines}
    bus = by_path[str(photos / "bus.jpg")]
    assert bus["sha256"] == service.client.get(f"/v1/jobs/{bus['job_id']}").json()["image"]["sha256"]
    assert {line["job_id"] for line in lines} == _job_ids(service) - before
    # The summary counts the labels of both jobs' detections: bus.jpg has people and a bus.
    detections = [d["label"] for line in lines for d in line["detections"]]
    for label in ("person", "bus"):
        row = next(row for row in result.stdout.splitlines() if f" {label} " in row)
        assert f" {detections.count(label)} " in row
    assert "readme" not in result.stdout and "Failures" not in result.stdout  # the walk left it out


@pytest.mark.slow
def test_a_text_file_among_the_images_fails_with_its_code_and_exit_status_1(
    service: Service, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    result = _submit(str(photos / "bus.jpg"), str(photos / "readme.txt"), "--out", str(out), server=service)

    assert result.exit_code == 1, result.output
    assert "2 files, 1 succeeded, 1 failed" in result.stdout
    failure = next(row for row in result.stdout.splitlines() if "readme.txt" in row)
    assert "not_an_image" in failure
    text = next(line for line in _lines(out) if line["path"].endswith("readme.txt"))
    assert (text["job_id"], text["status"], text["error"]["code"]) == (None, "failed", "not_an_image")
    assert "detections" not in text


@pytest.mark.slow
def test_a_rerun_with_the_same_results_file_sends_nothing(
    service: Service, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    args = (str(photos), str(photos / "readme.txt"), "--out", str(out), "--conf", "0.35")
    first = _submit(*args, server=service)
    assert first.exit_code == 1, first.output  # readme.txt
    recorded = out.read_text()
    before = _job_ids(service)

    again = _submit(*args, server=service)

    assert again.exit_code == 1, again.output
    assert _job_ids(service) == before
    assert "3 files, 2 succeeded, 1 failed, 3 finished in an earlier run" in again.stdout
    assert "person" in again.stdout  # the labels still come from the recorded detections
    assert out.read_text() == recorded


@pytest.mark.slow
def test_a_run_without_wait_is_picked_up_by_a_rerun_with_wait_on_the_same_jobs(
    service: Service, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    args = (str(photos), "--out", str(out), "--conf", "0.4")
    before = _job_ids(service)
    submitted = _submit(*args, "--no-wait", server=service)
    assert submitted.exit_code == 0, submitted.output
    assert "2 submitted, not waited for" in submitted.stdout
    queued = {line["path"]: line["job_id"] for line in _lines(out)}
    made = _job_ids(service) - before
    assert set(queued.values()) == made and len(made) == 2

    waited = _submit(*args, "--wait", server=service)

    assert waited.exit_code == 0, waited.output
    assert _job_ids(service) - before == made  # the Idempotency-Keys got the same jobs back
    lines = _lines(out)
    assert {line["path"]: line["job_id"] for line in lines} == queued
    assert [line["status"] for line in lines] == ["succeeded", "succeeded"]  # one line per file


@pytest.mark.slow
def test_an_interrupted_run_leaves_its_jobs_to_the_rerun_and_no_second_job_is_made(
    service: Service, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    args = [str(photos), "--out", str(out), "--conf", "0.45", "--server", str(service.client.base_url)]
    before = _job_ids(service)
    worker = service.procs.pid("worker")
    os.killpg(worker, signal.SIGSTOP)  # the jobs stay queued: the run is still waiting when it is stopped
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
        run = subprocess.Popen(
            [*VISIONQ, "submit", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            made = wait_until(
                lambda: (_job_ids(service) - before) if len(_job_ids(service) - before) == 2 else None,
                timeout_s=60,
                what="both uploads made their jobs",
                interval_s=0.2,
            )
            run.send_signal(signal.SIGINT)
            stdout, stderr = run.communicate(timeout=30)
        finally:
            run.kill()
            run.wait()
    finally:
        os.killpg(worker, signal.SIGCONT)

    assert run.returncode == 130, stdout + stderr
    assert "interrupted after 0 of 2 files" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() or _lines(out) == []

    rerun = _submit(*args[:-2], server=service)

    assert rerun.exit_code == 0, rerun.output
    assert _job_ids(service) - before == made
    assert {line["job_id"] for line in _lines(out)} == made


def test_a_server_that_is_down_is_one_clear_error_before_any_upload(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    result = _submit(str(photos), "--out", str(out), server=f"http://127.0.0.1:{free_port()}")

    assert result.exit_code == 1
    assert "connection_error" in result.stderr
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert not out.exists()


@pytest.mark.parametrize("url", ["ftp://example.org", "127.0.0.1:8000", "http://"])
def test_a_server_url_that_is_not_http_is_a_usage_error(photos: Path, url: str) -> None:
    result = _submit(str(photos), server=url)

    assert result.exit_code == 2
    assert "is not an http:// or https:// URL" in result.stderr


def test_paths_with_no_images_are_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")

    empty = _submit(str(tmp_path), server="http://127.0.0.1:1")
    missing = _submit(str(tmp_path / "nope" / "*.jpg"), server="http://127.0.0.1:1")

    assert (empty.exit_code, missing.exit_code) == (2, 2)
    assert "no image files" in empty.stderr
    assert "no such file, folder or match" in missing.stderr


def test_a_results_file_in_a_folder_that_does_not_exist_is_a_usage_error(
    photos: Path, tmp_path: Path
) -> None:
    result = _submit(str(photos), "--out", str(tmp_path / "nope" / "r.jsonl"), server="http://127.0.0.1:1")

    assert result.exit_code == 2
    assert "no folder" in result.stderr


@pytest.mark.slow
def test_with_api_keys_the_key_opens_the_service_and_is_never_shown(
    keyed: Service, photos: Path, tmp_path: Path
) -> None:
    assert httpx.get(f"{keyed.client.base_url}/v1/jobs").status_code == 401  # it does want a key
    refused = _submit(str(photos), "--api-key", "wrong-key-0123456789abcdef", server=keyed)
    without = _submit(str(photos), server=keyed)
    assert (refused.exit_code, without.exit_code) == (1, 1)
    assert "unauthorized" in refused.stderr and "unauthorized" in without.stderr
    assert "wrong-key-0123456789abcdef" not in refused.output

    out = tmp_path / "results.jsonl"
    # Two uploads at once, one submit per second: the second is answered 429 and sent again.
    result = _submit(
        str(photos), "--out", str(out), "--concurrency", "2", server=keyed, VISIONQ_API_KEY=API_KEY
    )

    assert result.exit_code == 0, result.output
    assert "2 files, 2 succeeded, 0 failed" in result.stdout
    assert "requests sent again (429, 503 or no answer)" in result.stdout
    assert API_KEY not in result.output + out.read_text()
    assert len(_job_ids(keyed, Authorization=f"Bearer {API_KEY}")) == 2


def test_the_command_is_on_the_visionq_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "visionq", "submit", "--help"], capture_output=True, text=True, check=True
    )

    assert "--api-key" in result.stdout and "VISIONQ_SERVER" in result.stdout
