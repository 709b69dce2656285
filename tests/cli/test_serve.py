"""`visionq flower` and `visionq up` keep Flower on loopback unless it has basic auth."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import settings_of
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
