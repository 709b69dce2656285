"""`visionq detect`: run the detector in-process on image files, no queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from visionq import constants
from visionq.cli.common import err, load_detector, load_settings, out, reported_errors
from visionq.errors import InvalidImage


def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image per line.")] = False,
    annotate_dir: Annotated[
        Path | None,
        typer.Option("--annotate", help="Write each image with its boxes drawn into this folder."),
    ] = None,
    conf: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Confidence threshold.")
    ] = constants.DEFAULT_CONFIDENCE,
    iou: Annotated[float, typer.Option(min=0.0, max=1.0, help="NMS IoU threshold.")] = constants.DEFAULT_IOU,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names to keep.")] = None,
    max_det: Annotated[
        int, typer.Option(min=1, help="Most detections per image.")
    ] = constants.DEFAULT_MAX_DETECTIONS,
    model: Annotated[str | None, typer.Option(help="Model name; default VISIONQ_MODEL.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads; default all cores.")] = None,
) -> None:
    """Detect objects in IMAGE files with the local model."""
    from visionq.detect.annotate import annotate
    from visionq.detect.image import decode_image

    settings = load_settings()
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    with reported_errors():
        detector = load_detector(settings, model or settings.model, threads=threads)
        if wanted:
            detector.class_ids(wanted)  # unknown names fail once, before any image
    if annotate_dir is not None:
        annotate_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    written: set[str] = set()
    for path in images:
        try:
            data = path.read_bytes()
            result = detector.detect(data, conf=conf, iou=iou, classes=wanted, max_det=max_det)
        except InvalidImage as exc:
            failed += 1
            if as_json:
                line = {"image": str(path), "error": {"code": exc.code, "message": exc.message}}
                typer.echo(json.dumps(line))
            err.print(f"[red]{escape(str(path))}[/red]: {escape(exc.message)}")
            continue
        if annotate_dir is not None:
            # Drawn on the full-resolution image: detection may have decoded a reduced one.
            full = decode_image(data, max_pixels=settings.max_image_pixels)
            (annotate_dir / _unique_name(path, written)).write_bytes(annotate(full.image, result.detections))
        if as_json:
            typer.echo(json.dumps({"image": str(path), **result.to_dict()}))
            continue
        table = Table(
            "label", "confidence", "x1", "y1", "x2", "y2", title=f"{path} ({result.width}x{result.height})"
        )
        for d in result.detections:
            b = d.box
            table.add_row(
                d.label, f"{d.confidence:.3f}", f"{b.x1:.0f}", f"{b.y1:.0f}", f"{b.x2:.0f}", f"{b.y2:.0f}"
            )
        out.print(table)
        out.print(" ".join(f"{k} {v:.1f} ms" for k, v in result.timings_ms.items()))
    if failed:
        raise typer.Exit(1)


def _unique_name(path: Path, written: set[str]) -> str:
    """`<stem>.jpg`, or `<stem>-2.jpg`... when another input of this run had the same stem."""
    name, n = f"{path.stem}.jpg", 1
    while name in written:
        n += 1
        name = f"{path.stem}-{n}.jpg"
    written.add(name)
    return name
