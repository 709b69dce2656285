"""Runtime: a process's share of the cores, one detector per model, built once per process."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import available_cores
from visionq.models.cache import ModelCache
from visionq.worker.runtime import Runtime, RuntimeSlot, runtime_slot


@pytest.fixture
def settings(tmp_path: Path, model_cache: ModelCache) -> Settings:
    (tmp_path / "models").symlink_to(model_cache.root.resolve(), target_is_directory=True)
    return Settings(data_dir=tmp_path, broker_url=None, database_url=None)


@pytest.mark.parametrize("concurrency", [1, 2, 64])
def test_prefork_children_split_the_cores_between_them(settings: Settings, concurrency: int) -> None:
    runtime = Runtime.create(settings, concurrency=concurrency)

    assert runtime.threads == max(1, available_cores() // concurrency)
    assert runtime.detector(constants.DEFAULT_MODEL).threads == runtime.threads
    runtime.close()


def test_configured_threads_win_over_the_split(settings: Settings) -> None:
    runtime = Runtime.create(settings.model_copy(update={"threads": 3}), concurrency=8)

    assert runtime.threads == 3
    runtime.close()


def test_a_model_is_loaded_once_per_process(settings: Settings) -> None:
    runtime = Runtime.create(settings)

    assert runtime.detector(constants.DEFAULT_MODEL) is runtime.detector(constants.DEFAULT_MODEL)
    runtime.close()


def test_the_slot_builds_its_runtime_once_on_first_use(settings: Settings) -> None:
    slot = RuntimeSlot(settings)

    first = slot.get()

    assert slot.get() is first
    first.close()


def test_an_app_not_made_by_the_factory_has_no_runtime() -> None:
    with pytest.raises(RuntimeError, match="create_celery_app"):
        runtime_slot(Celery("foreign", set_as_current=False))
