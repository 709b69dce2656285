"""`visionq up` on a machine with no servers: everything runs, a job goes through, and a stop leaves
no process behind."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import VISIONQ, free_port, processes, processes_with_data_dir, wait_ready
from tests.helpers import settings_of, visionq_env, wait_until
from visionq.cli.up import _reporters

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_up_runs_the_whole_service_and_stops_it_without_orphans(
    tmp_path: Path, samples: dict[str, bytes], stop_signal: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    port, flower_port = free_port(), free_port()
    env = visionq_env(data_dir, flower_basic_auth="admin:s3cret")
    args = [*VISIONQ, "up", "--workers", "1", "--port", str(port), "--flower-port", str(flower_port)]
    with processes(tmp_path / "logs") as procs:
        up = procs.start("up", args, env)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs, timeout=120)
        assert "http://127.0.0.1:" in procs.output("up")
        # The model was pulled into the empty data dir before anything started.
        assert (data_dir / "models" / "yolov4-tiny" / "model.onnx").is_file()
        response = httpx.post(
            f"{base}/v1/detect",
            files={"image": ("bus.jpg", samples["bus.jpg"])},
            data={"timeout": "60"},
            timeout=90,
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "succeeded"
        flower = f"http://127.0.0.1:{flower_port}"
        _wait_http(flower, auth=("admin", "s3cret"))
        assert httpx.get(flower, timeout=10).status_code == 401
        workers = _flower_workers(flower, auth=("admin", "s3cret"))
        assert any(name.startswith("visionq@") for name in workers), workers
        # Workers send task events only once Flower asks for them (every 5 s while it runs): the jobs
        # that run while it watches are in its task list.
        seen = _a_job_flower_lists(base, flower, samples["zidane.jpg"], auth=("admin", "s3cret"))
        assert seen["name"] == "visionq.detect" and seen["state"] == "SUCCESS", seen
        assert processes_with_data_dir(data_dir), "the group's processes should be visible before the stop"

        up.send_signal(stop_signal)
        assert up.wait(timeout=40) == 0, procs.output("up")[-3000:]
        # Every process stopped by itself (a Celery warm shutdown, uvicorn's graceful one): none had
        # to be killed after the grace period.
        assert "did not stop" not in procs.output("up"), procs.output("up")[-3000:]
    # Every process of the group (api, worker and its pool, beat, flower) is gone.
    wait_until(lambda: not processes_with_data_dir(data_dir), timeout_s=10, what="every process gone")


def _a_job_flower_lists(base: str, flower: str, image: bytes, *, auth: tuple[str, str]) -> dict[str, Any]:
    """Run jobs until Flower's task list shows one of them (events on); that task's entry."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = httpx.post(
            f"{base}/v1/detect", files={"image": ("z.jpg", image)}, data={"timeout": "30"}, timeout=60
        ).json()
        assert job["status"] == "succeeded", job
        for _ in range(10):
            tasks = httpx.get(f"{flower}/api/tasks", auth=auth, timeout=10).json()
            if job["id"] in tasks and tasks[job["id"]].get("state") == "SUCCESS":
                task: dict[str, Any] = tasks[job["id"]]
                return task
            time.sleep(0.3)
    pytest.fail("Flower listed none of the jobs run within 60 s")


def _wait_http(url: str, *, auth: tuple[str, str], timeout: float = 60) -> None:
    def answers() -> bool:
        try:
            return httpx.get(url, auth=auth, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout_s=timeout, what=f"{url} answers 200", interval_s=0.5)


def _flower_workers(flower: str, *, auth: tuple[str, str], timeout: float = 60) -> list[str]:
    """Worker names Flower knows, asking it to refresh them over the broker (inspect broadcast)."""

    def names() -> list[str] | None:
        try:
            response = httpx.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=auth, timeout=20)
            return (list(response.json()) if response.status_code == 200 else None) or None
        except (httpx.HTTPError, ValueError):
            return None

    return wait_until(names, timeout_s=timeout, what="Flower knows a worker", interval_s=1)


def test_up_refuses_a_bad_configuration_with_a_clear_message(tmp_path: Path) -> None:
    env = visionq_env(tmp_path / "data", max_image_bytes="-5")
    result = subprocess.run([*VISIONQ, "up"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "max_image_bytes" in result.stderr


def test_up_itself_reports_in_json_lines_with_visionq_log_format_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        say, complain = _reporters(settings_of(log_format="json"))
        say("visionq is up: API http://127.0.0.1:8000 (docs at /docs)")
        complain("api exited unexpectedly; stopped the others")
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = handlers, level

    captured = capsys.readouterr()
    entries = [json.loads(line) for line in captured.err.splitlines()]
    assert [(e["level"], e["logger"]) for e in entries] == [
        ("INFO", "visionq.cli.up"),
        ("ERROR", "visionq.cli.up"),
    ]
    assert entries[1]["message"] == "api exited unexpectedly; stopped the others"
    assert captured.out == ""
