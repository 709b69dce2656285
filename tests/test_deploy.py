"""The systemd units in deploy/systemd: valid units, each running a real visionq command, stopped the
way a worker drains (SIGTERM to the main process only, time for a detection to finish)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionq import constants
from visionq.cli import app

UNITS = sorted((Path(__file__).parent.parent / "deploy" / "systemd").glob("*.service"))


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_there_is_a_unit_for_the_api_the_worker_and_beat() -> None:
    assert [u.name for u in UNITS] == [
        "visionq-api.service",
        "visionq-beat.service",
        "visionq-worker.service",
    ]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_each_unit_runs_a_visionq_command_and_stops_with_sigterm_to_its_main_process(path: Path) -> None:
    service = _unit(path)["Service"]
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).name == "visionq"
    assert CliRunner().invoke(app, [*command[1:], "--help"]).exit_code == 0  # a real command, real options
    assert service["KillMode"] == "mixed"


def test_the_worker_is_given_longer_to_drain_than_a_detection_may_run() -> None:
    (worker,) = [u for u in UNITS if u.name == "visionq-worker.service"]
    assert int(_unit(worker)["Service"]["TimeoutStopSec"]) > constants.TASK_TIME_LIMIT_S


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: systemd)")
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_finds_nothing_wrong_with_the_unit_but_its_absent_install_path(path: Path) -> None:
    run = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [line for line in run.stderr.splitlines() if line.strip()]
    # /opt/visionq is where the unit says visionq is installed; this machine has it elsewhere.
    assert all("/opt/visionq/.venv/bin/visionq is not executable" in line for line in complaints), complaints
