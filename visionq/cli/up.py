"""`visionq up`: api + worker + beat + flower on one machine, as one supervised group."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from visionq.cli.common import err, load_settings, out, reported_errors
from visionq.cli.serve import check_api_keys, check_flower_exposure
from visionq.system import available_cores

if TYPE_CHECKING:
    from visionq.config import Settings

logger = logging.getLogger(__name__)

# Seconds the group gets to stop on SIGTERM before what is left is killed.
_STOP_GRACE_S = 15.0
_PR_SET_PDEATHSIG = 1


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `visionq up` dies, even by SIGKILL (Linux)."""
    os.setsid()  # its own process group, so stopping it stops its children (prefork pool) too
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the signal handlers below still stop the group on Ctrl-C and SIGTERM


def up(
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker child processes; default: cores.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the API and Flower listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port.")] = 5555,
    worker_metrics_port: Annotated[
        int | None, typer.Option(help="Port of the worker's Prometheus metrics (on --host); off by default.")
    ] = None,
) -> None:
    """Pull the model if missing, then run api, worker, beat and flower until Ctrl-C or SIGTERM."""
    settings = load_settings()
    check_flower_exposure(host, settings)
    check_api_keys(settings)
    say, complain = _reporters(settings)
    with reported_errors():
        _prepare(settings, say)
    me = [sys.executable, "-m", "visionq"]
    concurrency = workers or available_cores()
    worker = [*me, "worker", "--concurrency", str(concurrency)]
    if worker_metrics_port is not None:
        worker += ["--metrics-host", host, "--metrics-port", str(worker_metrics_port)]
    children = [
        _Child("api", [*me, "api", "--host", host, "--port", str(port)]),
        _Child("worker", worker),
        _Child("beat", [*me, "beat"]),
        _Child("flower", [*me, "flower", "--host", host, "--port", str(flower_port)]),
    ]
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for child in children:
        child.process = subprocess.Popen(child.argv, preexec_fn=_die_with_parent)
    broker = "filesystem (embedded)" if settings.embedded_broker else "external"
    say(f"visionq is up: API http://{host}:{port} (docs at /docs), Flower http://{host}:{flower_port}")
    say(f"{concurrency} worker process(es), {broker} broker, data in {settings.data_dir.resolve()}")
    say("Ctrl-C stops everything.")
    failed = _supervise(children, lambda: stopping)
    _stop(children, complain)
    if failed:
        complain(f"{failed} exited unexpectedly; stopped the others")
        raise typer.Exit(1)


def _reporters(settings: Settings) -> tuple[Callable[[str], None], Callable[[str], None]]:
    """How `visionq up` itself tells what it does, and what went wrong: console lines, or with
    VISIONQ_LOG_FORMAT=json log lines on stderr like its children's."""
    if settings.log_format == "json":
        from visionq.observe.logs import log_to_stderr

        log_to_stderr("json")
        return logger.info, logger.error
    return out.print, lambda message: err.print(f"[red]{escape(message)}[/red]")


def _prepare(settings: Settings, say: Callable[[str], None]) -> None:
    from visionq.models.cache import ModelCache
    from visionq.store import migrate_database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ModelCache(settings.models_dir).ensure(settings.model, announce=say)
    # Before the processes start, so none of them serves or works on a half-made schema (each
    # migrates again at start-up; that finds nothing to do).
    migrate_database(settings.resolved_database_url)


def _supervise(children: list[_Child], stopping: Callable[[], bool]) -> str | None:
    """Wait until asked to stop or a child dies; returns the name of a child that died."""
    while not stopping():
        for child in children:
            assert child.process is not None
            if child.process.poll() is not None:
                return child.name
        time.sleep(0.2)
    return None


def _stop(children: list[_Child], complain: Callable[[str], None]) -> None:
    """SIGTERM each child, wait, then SIGKILL whatever is left in its process group: no orphans.

    SIGTERM goes to the group leader only: a Celery worker then stops its pool children itself (warm
    shutdown); children signalled directly would die at once and the worker would fork new ones.
    """
    for child in children:
        assert child.process is not None
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    for child in children:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            complain(f"{child.name} did not stop in {_STOP_GRACE_S:.0f} s; killing it")
        _signal_group(child, signal.SIGKILL)  # its pool children, even if the leader is gone
        child.process.wait()


def _signal_group(child: _Child, signum: int) -> None:
    assert child.process is not None
    try:
        os.killpg(child.process.pid, signum)
    except ProcessLookupError:
        pass
