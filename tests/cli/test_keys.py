"""`visionq keys new`, and the key checks `visionq api` and `visionq up` make before starting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import settings_of
from visionq.api.access import ApiKeys, read_key_file
from visionq.cli import app


def test_a_new_key_comes_with_the_line_that_lets_it_in(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["keys", "new", "ci-runner"])
    assert result.exit_code == 0, result.output
    key = re.search(r"^key:\s+(\S+)$", result.stdout, re.MULTILINE)
    line = re.search(r"^line:\s+(.+)$", result.stdout, re.MULTILINE)
    assert key is not None and line is not None
    assert len(key.group(1)) >= 40

    keys_file = tmp_path / "keys"
    keys_file.write_text(line.group(1) + "\n")
    keys = ApiKeys.from_settings(settings_of(api_keys_file=keys_file))
    assert keys is not None and keys.identify(key.group(1)) == "ci-runner"
    assert key.group(1) not in keys_file.read_text()  # only its hash is kept
    assert [k.name for k in read_key_file(keys_file)] == ["ci-runner"]


def test_a_key_name_with_spaces_is_refused() -> None:
    result = CliRunner().invoke(app, ["keys", "new", "two words"])
    assert result.exit_code == 2
    assert "name" in result.output


@pytest.mark.parametrize("command", [["api"], ["up"]])
def test_the_api_does_not_start_on_a_missing_or_malformed_key_file(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONQ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VISIONQ_API_KEYS_FILE", str(tmp_path / "absent"))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "invalid API keys" in result.output and "absent" in result.output

    (tmp_path / "absent").write_text("not-a-hash someone\n")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "absent:1: expected" in result.output
