"""`visionq flower` and `visionq up` keep Flower on loopback unless it has basic auth; `visionq worker`
refuses a metrics port it cannot listen on; `visionq api` believes X-Forwarded-For from its proxies only."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.stack import VISIONQ, free_port, processes, wait_ready
from tests.helpers import settings_of, visionq_env
from visionq.cli import app
from visionq.cli.serve import check_flower_exposure


@pytest.mark.parametrize(
    "command",
    [
        ["flower", "--host", "0.0.0.0"],
        ["flower", "--host", "10.1.2.3"],
        ["flower", "--host", "worker-1.internal"],
        ["up", "--host", "0.0.0.0"],
    ],
)
def test_flower_beyond_loopback_without_basic_auth_is_refused(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VISIONQ_FLOWER_BASIC_AUTH", raising=False)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "without basic auth" in result.output and "VISIONQ_FLOWER_BASIC_AUTH" in result.output
    assert not (tmp_path / "data").exists()  # refused before anything was started or pulled


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_flower_on_loopback_needs_no_basic_auth(host: str) -> None:
    check_flower_exposure(host, settings_of())  # returns: no exit


def test_flower_beyond_loopback_with_basic_auth_is_let_through() -> None:
    check_flower_exposure("0.0.0.0", settings_of(flower_basic_auth="ops:s3cret"))


def test_a_worker_whose_metrics_port_is_taken_exits_2_saying_so(tmp_path: Path) -> None:
    # A subprocess: the command turns prometheus_client's multiprocess mode on in its own process.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*VISIONQ, "worker", "--metrics-port", str(port)],
            env={**visionq_env(tmp_path / "data"), "TMPDIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert not list(tmp_path.glob("visionq-worker-metrics-*"))  # its folder removed


@pytest.mark.slow
@pytest.mark.parametrize(("trusted", "second"), [("127.0.0.1", 200), ("10.9.9.9", 429)])
def test_the_api_believes_x_forwarded_for_only_from_the_proxies_it_is_told_of(
    tmp_path: Path, trusted: str, second: int
) -> None:
    """Rate limits count per client address: behind a trusted proxy, two clients are two; from a proxy
    it was not told of, X-Forwarded-For is ignored and both are the proxy."""
    port = free_port()
    env = visionq_env(tmp_path, forwarded_allow_ips=trusted, rate_limit="1/minute")
    with processes(tmp_path / "logs") as procs:
        procs.start("api", [*VISIONQ, "api", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, procs)
        first = httpx.get(f"{base}/v1/models", headers={"X-Forwarded-For": "203.0.113.1"})
        other = httpx.get(f"{base}/v1/models", headers={"X-Forwarded-For": "203.0.113.2"})
    assert first.status_code == 200
    assert other.status_code == second
