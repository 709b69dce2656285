"""Settings: the environment, a `.env` file, and the embedded defaults when nothing is configured."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from visionq import constants
from visionq.config import Settings


@pytest.fixture(autouse=True)
def no_visionq_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from a clean environment, in a folder without a `.env`."""
    for name in [n for n in os.environ if n.startswith("VISIONQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_with_nothing_configured_everything_is_embedded_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.data_dir == Path(".visionq")
    assert settings.embedded_broker
    assert settings.resolved_broker_url.startswith("filesystem://")
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / '.visionq' / 'visionq.db').resolve()}"
    assert settings.retention == timedelta(days=7)
    assert settings.model == constants.DEFAULT_MODEL


def test_a_dotenv_file_configures_visionq_and_the_environment_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "VISIONQ_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//\n"
        "VISIONQ_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/visionq\n"
        "VISIONQ_RETENTION=P2D\n"
        "VISIONQ_MODEL=from-dotenv\n"
    )
    monkeypatch.setenv("VISIONQ_MODEL", "from-environment")
    settings = Settings()
    assert not settings.embedded_broker
    assert settings.resolved_broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert settings.resolved_database_url == "postgresql+psycopg://postgres@127.0.0.1/visionq"
    assert settings.retention == timedelta(days=2)
    assert settings.model == "from-environment"


def test_blank_urls_mean_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONQ_BROKER_URL", "  ")
    monkeypatch.setenv("VISIONQ_DATABASE_URL", "")
    settings = Settings()
    assert settings.embedded_broker
    assert settings.resolved_database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("name", "value"),
    [("VISIONQ_MAX_IMAGE_BYTES", "0"), ("VISIONQ_TASK_TIME_LIMIT", "1800"), ("VISIONQ_THREADS", "zero")],
)
def test_out_of_range_values_are_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("VISIONQ_").lower()):
        Settings()
