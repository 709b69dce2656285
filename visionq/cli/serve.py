"""`visionq api|worker|beat|flower`: the job service's processes, one command each."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from visionq import constants
from visionq.cli.common import err, load_settings

if TYPE_CHECKING:
    from visionq.config import Settings


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log a line per request (uvicorn's access log): 0.12 ms of CPU each.")
    ] = False,
) -> None:
    """The HTTP API (FastAPI on uvicorn); OpenAPI docs at /docs."""
    import copy

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from visionq.observe.logs import uvicorn_log_config
    from visionq.observe.metrics import multiprocess_folder

    settings = load_settings()
    check_api_keys(settings)  # fail early, with a readable message, on a bad configuration
    # uvicorn's logging, plus visionq's own loggers (accepted jobs, 4xx and 5xx answers) through its
    # handler and format; without this Python shows only their warnings, bare.
    log_config = uvicorn_log_config(copy.deepcopy(LOGGING_CONFIG), settings.log_format)
    # Before uvicorn starts its processes (--workers): they all count into this folder, and the
    # /metrics of any of them serves the sum.
    with multiprocess_folder("api"):
        uvicorn.run(
            "visionq.api.app:create_default_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
            log_config=log_config,
            log_level="info",
            # Off unless asked for: it cost 0.12 ms of a GET's 1.0 ms of API CPU (measured side by side,
            # AMX Xeon), paid again on every poll. Each accepted job is logged once (visionq.api.submit),
            # every 4xx and 5xx answer too (visionq.api.errors).
            access_log=access_log,
        )


def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Child processes, each with its own model; default: cores.")
    ] = None,
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to consume: the jobs' and the webhooks'.")
    ] = f"{constants.QUEUE},{constants.WEBHOOK_QUEUE}",
    name: Annotated[str | None, typer.Option(help="Node name; default visionq@<hostname>.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve Prometheus metrics (all the children's, summed) on this port; off by default.",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics listen on.")] = "127.0.0.1",
) -> None:
    """A Celery worker (prefork pool): each child loads the model once and warms it up."""
    from visionq.observe.metrics import multiprocess_folder, start_metrics_server
    from visionq.system import available_cores
    from visionq.worker.app import WorkerApp

    settings = load_settings()
    if settings.log_format == "json":
        _json_until_celery_logs()
    # Celery's banner is not a log line: left out where every line is JSON.
    argv = ["-q"] if settings.log_format == "json" else []
    argv += ["worker", "--pool", "prefork", "--queues", queues, "--loglevel", loglevel]
    argv += ["--concurrency", str(concurrency or available_cores())]
    argv += ["--hostname", name or f"visionq@{socket.gethostname()}"]
    with contextlib.ExitStack() as stack:
        if metrics_port is not None:
            # Before the pool forks: every child counts into this folder, which the main process serves.
            stack.enter_context(multiprocess_folder("worker"))
            try:
                start_metrics_server(metrics_host, metrics_port)
            except OSError as exc:
                where = f"{metrics_host}:{metrics_port}"
                err.print(f"[red]cannot serve metrics on {escape(where)}:[/red] {escape(str(exc))}")
                raise typer.Exit(2) from exc
        WorkerApp(settings).worker_main(argv)


def beat(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """Celery beat: schedules the reconciliation of the job table with the broker (every 30 s: jobs
    whose message was lost are published again) and the purge of expired jobs (run exactly one)."""
    from visionq.observe.logs import use_json_in_celery
    from visionq.queue import create_celery_app

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # its schedule file lives there
    argv = ["beat", "--loglevel", loglevel]
    if settings.log_format == "json":
        _json_until_celery_logs()
        use_json_in_celery()
        argv.insert(0, "-q")  # beat's banner is not a log line
    create_celery_app(settings).start(argv)


def flower(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5555,
) -> None:
    """Flower, to watch workers and tasks; basic auth when VISIONQ_FLOWER_BASIC_AUTH is set (it must be,
    to listen on anything but loopback: Flower can revoke tasks and shut workers down)."""
    from visionq.queue import create_celery_app

    settings = load_settings()
    check_flower_exposure(host, settings)
    argv = ["flower", f"--address={host}", f"--port={port}"]
    if settings.log_format == "json":
        from visionq.observe.logs import log_to_stderr

        log_to_stderr("json")
        argv.append("--logging=none")  # tornado would put its own handler on the root logger
    if settings.flower_basic_auth is not None:
        argv.append(f"--basic-auth={settings.flower_basic_auth.get_secret_value()}")
    create_celery_app(settings).start(argv)


def _json_until_celery_logs() -> None:
    """JSON from the start: warnings before Celery sets its logging up (its SecurityWarning as root)."""
    import logging

    from visionq.observe.logs import log_to_stderr

    log_to_stderr("json", level=logging.WARNING)


def check_api_keys(settings: Settings) -> None:
    """Exit 2, saying why, when the API keys cannot be read (a missing or malformed key file)."""
    from visionq.api.access import ApiKeys

    try:
        ApiKeys.from_settings(settings)
    except (OSError, ValueError) as exc:
        err.print(f"[red]invalid API keys:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def check_flower_exposure(host: str, settings: Settings) -> None:
    """Exit 2 when Flower would listen beyond this machine without basic auth."""
    if settings.flower_basic_auth is None and not _is_loopback(host):
        err.print(
            f"[red]refusing to run Flower on {escape(host)} without basic auth:[/red] set "
            "VISIONQ_FLOWER_BASIC_AUTH=user:password, or listen on 127.0.0.1"
        )
        raise typer.Exit(2)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
