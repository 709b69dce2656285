"""Which files `visionq submit` sends: folders walked for images, patterns expanded, each file once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from visionq.client.files import NoFiles, expand, file_sha256, idempotency_key


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_folder_is_walked_for_images_of_any_case_and_nothing_else(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _touch(photos / "b.JPG", photos / "a.png", photos / "deep" / "er" / "c.TiFf", photos / "notes.txt")
    _touch(photos / "deep" / "d.webp", photos / "deep" / "archive.zip")

    found = expand([str(photos)])

    assert found == [
        photos / "a.png",
        photos / "b.JPG",
        photos / "deep" / "d.webp",
        photos / "deep" / "er" / "c.TiFf",
    ]


def test_a_pattern_the_shell_left_alone_is_expanded_recursively(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg", tmp_path / "sub" / "b.jpg", tmp_path / "sub" / "c.png")

    assert expand([str(tmp_path / "**" / "*.jpg")]) == [tmp_path / "a.jpg", tmp_path / "sub" / "b.jpg"]


def test_a_file_named_on_the_command_line_is_sent_whatever_its_name(tmp_path: Path) -> None:
    _touch(tmp_path / "notes.txt")

    assert expand([str(tmp_path / "notes.txt")]) == [tmp_path / "notes.txt"]


def test_a_file_named_twice_or_matched_twice_is_sent_once_in_first_order(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg", tmp_path / "b.jpg")

    found = expand([str(tmp_path / "b.jpg"), str(tmp_path), str(tmp_path / "*.jpg")])

    assert found == [tmp_path / "b.jpg", tmp_path / "a.jpg"]


def test_an_existing_name_that_looks_like_a_pattern_is_that_file(tmp_path: Path) -> None:
    _touch(tmp_path / "shot[1].jpg", tmp_path / "shot1.jpg")

    assert expand([str(tmp_path / "shot[1].jpg")]) == [tmp_path / "shot[1].jpg"]


def test_paths_that_match_nothing_are_named_in_the_error(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")

    with pytest.raises(NoFiles, match=r"missing\.jpg, .*\*\.gif$"):
        expand([str(tmp_path / "a.jpg"), str(tmp_path / "missing.jpg"), str(tmp_path / "*.gif")])


def test_a_folder_without_images_is_no_files(tmp_path: Path) -> None:
    _touch(tmp_path / "notes.txt")

    with pytest.raises(NoFiles, match="no image files"):
        expand([str(tmp_path)])


def test_the_idempotency_key_names_the_content_and_the_parameters(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    sha = file_sha256(tmp_path / "a.jpg")
    key = idempotency_key(sha, model=None, conf=None)

    assert sha == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256(b"x")
    assert key == idempotency_key(sha, model=None, conf=None)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", key)  # printable ASCII, well under the API's 255
    others = {
        idempotency_key(sha, model="yolov4-tiny", conf=None),
        idempotency_key(sha, model=None, conf=0.5),
        idempotency_key("0" * 64, model=None, conf=None),
    }
    assert key not in others
    assert len(others) == 3
