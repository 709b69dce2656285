"""Which files a submit sends, and the key that makes sending one again harmless.

Paths are taken the way a shell user expects: a file named on the command line is sent whatever its
name (the user chose it; the server says whether it is an image), a folder is walked for images only,
and a pattern the shell left unexpanded (quoted, or from a script) is expanded here as the shell would
have.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

# The formats the API decodes (visionq.detect.image); other files in a folder are not images we send.
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

_GLOB_CHARS: Final = frozenset("*?[")
# Read in pieces: a folder of 20 MB photos hashed whole would hold them in memory N at a time.
_CHUNK: Final = 1 << 20


class NoFiles(ValueError):
    """Nothing the paths name is a file to send."""


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def expand(paths: Iterable[str]) -> list[Path]:
    """The files `paths` name, each once, in the order given (a folder's in sorted order).

    Raises NoFiles naming the paths that matched nothing, or when all together name no file.
    """
    found: dict[Path, None] = {}  # an ordered set: a file named twice (or matched twice) is sent once
    missing: list[str] = []
    for raw in paths:
        matches = [path for path in _matches(raw) if path.is_dir() or path.is_file()]
        if not matches:
            missing.append(raw)
        for path in matches:
            found.update(dict.fromkeys(_images_under(path) if path.is_dir() else [path]))
    if missing:
        raise NoFiles(f"no such file, folder or match: {', '.join(missing)}")
    if not found:
        raise NoFiles("no image files in " + ", ".join(paths))
    return list(found)


def _matches(raw: str) -> list[Path]:
    path = Path(raw)
    if path.exists() or not _GLOB_CHARS.intersection(raw):
        return [path]  # an existing name with `[` in it is that name, not a pattern
    return [Path(match) for match in sorted(glob.glob(raw, recursive=True))]


def _images_under(folder: Path) -> list[Path]:
    images: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        images.extend(Path(root) / name for name in sorted(names) if is_image_name(Path(name)))
    return [path for path in images if path.is_file()]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def idempotency_key(sha256: str, *, model: str | None, conf: float | None) -> str:
    """The Idempotency-Key of one upload: the same file with the same parameters, the same key.

    The parameters are in it because the API refuses a key sent again with another request (409
    `idempotency_key_reused`): a rerun with another --conf is another request and gets its own job.
    71 printable ASCII characters, well inside the API's 255.
    """
    asked = json.dumps({"sha256": sha256, "model": model, "conf": conf}, sort_keys=True)
    return "sha256:" + hashlib.sha256(asked.encode()).hexdigest()
