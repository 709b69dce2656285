"""Runtime: a process's share of the cores, one detector per model, the default model warmed up."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionq import constants
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.system import available_cores
from visionq.worker.runtime import Runtime


@pytest.fixture
def settings(tmp_path: Path, model_cache: ModelCache) -> Settings:
    (tmp_path / "models").symlink_to(model_cache.root.resolve(), target_is_directory=True)
    return Settings(data_dir=tmp_path, broker_url=None, database_url=None)


@pytest.mark.parametrize("processes", [1, 2, 64])
def test_inference_processes_split_the_cores_between_them(settings: Settings, processes: int) -> None:
    runtime = Runtime.create(settings, inference_processes=processes)

    assert runtime.threads == max(1, available_cores() // processes)
    assert runtime.detector(constants.DEFAULT_MODEL).threads == runtime.threads
    runtime.close()


def test_configured_threads_win_over_the_split(settings: Settings) -> None:
    runtime = Runtime.create(settings.model_copy(update={"threads": 3}), inference_processes=8)

    assert runtime.threads == 3
    runtime.close()


def test_a_model_is_loaded_once_per_process(settings: Settings) -> None:
    runtime = Runtime.create(settings)

    assert runtime.detector(constants.DEFAULT_MODEL) is runtime.detector(constants.DEFAULT_MODEL)
    runtime.close()


def test_warming_up_loads_the_default_model(settings: Settings) -> None:
    runtime = Runtime.create(settings)

    runtime.warm_up()

    assert runtime.detector(constants.DEFAULT_MODEL) is runtime.detector(settings.model)
    runtime.close()


def test_a_default_model_that_cannot_be_loaded_is_logged_not_raised(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Runtime.create(settings.model_copy(update={"model": "not-in-the-cache"}))

    runtime.warm_up()

    assert "default model 'not-in-the-cache' not loaded" in caplog.text
    runtime.close()
