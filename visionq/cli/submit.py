"""`visionq submit`: send image files to a running visionq service over its API, and say what it found.

The HTTP side is `visionq.client`; this module reads the command line, shows progress and prints the
summary. The client is imported inside the command, so that `visionq --help` does not load httpx.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from visionq.cli.common import err, out

if TYPE_CHECKING:
    from collections.abc import Sequence

    from visionq.client.batch import Request
    from visionq.client.client import VisionqClient
    from visionq.client.results import Outcome

DEFAULT_SERVER: Final = "http://127.0.0.1:8000"
# Enough to keep a few workers busy while each upload's bytes travel; a server that wants more
# parallel clients has them. Also the bound on the jobs one run holds queued at a time.
DEFAULT_CONCURRENCY: Final = 4
_FAILURES_SHOWN: Final = 20  # the rest are in --out; a terminal of 10,000 failures helps no one
EXIT_INTERRUPTED: Final = 130  # what a shell reports for a command ended by Ctrl-C


def submit(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders (searched for images) and glob patterns.")
    ],
    server: Annotated[
        str, typer.Option(envvar="VISIONQ_SERVER", help="The visionq API's base URL.")
    ] = DEFAULT_SERVER,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="VISIONQ_API_KEY", help="API key, sent as a bearer token.", show_default=False),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow each job to its end, or only submit it.")
    ] = True,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            dir_okay=False,
            help="Append one JSON line per file as it ends; files recorded as finished are not sent again.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Files in flight at once.")
    ] = DEFAULT_CONCURRENCY,
    model: Annotated[str | None, typer.Option(help="Model name; default: the server's.")] = None,
    conf: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Confidence threshold; default: the server's.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds to wait for each job (--wait).")] = 300.0,
) -> None:
    """Submit PATHS to a visionq service; with --wait, print the labels found and the failures.

    Exit status: 0 all succeeded (with --no-wait: submitted), 1 some failed, 2 usage, 130 interrupted.

    Run the same command again to resume: no file is submitted twice.
    """
    from visionq.client import results
    from visionq.client.batch import Request
    from visionq.client.client import CONNECTION_ERROR, ApiError, VisionqClient
    from visionq.client.files import NoFiles, expand

    _check_url(server)
    try:
        files = expand(paths)
    except NoFiles as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if out_path is not None and not out_path.parent.is_dir():
        err.print(
            f"[red]error:[/red] --out {escape(str(out_path))}: no folder {escape(str(out_path.parent))}"
        )
        raise typer.Exit(2)
    finished = results.finished(out_path) if out_path is not None else {}
    request = Request(model=model, conf=conf, wait=wait, timeout_s=timeout)
    with VisionqClient(server, api_key=api_key, connections=concurrency) as client:
        try:
            client.check()
        except ApiError as exc:
            said = "does not answer" if exc.code == CONNECTION_ERROR else "refuses"
            err.print(
                f"[red]error[/red] ({exc.code}): the server at {escape(server)} {said}: {escape(exc.message)}"
            )
            raise typer.Exit(1) from exc
        outcomes = _run(client, files, request, concurrency, out_path, finished)
    _summary(outcomes, waited=wait, retries=client.retries)
    if any(o.failed for o in outcomes):
        raise typer.Exit(1)


def _check_url(server: str) -> None:
    import httpx

    try:
        url = httpx.URL(server)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        err.print(f"[red]error:[/red] --server {escape(server)!r} is not an http:// or https:// URL")
        raise typer.Exit(2)


def _run(
    client: VisionqClient,
    files: Sequence[Path],
    request: Request,
    concurrency: int,
    out_path: Path | None,
    finished: dict[tuple[str, str], Outcome],
) -> list[Outcome]:
    """Every file's outcome, recorded in `out_path` as it comes, with a progress bar on stderr."""
    from visionq.client import batch, results

    record = results.ResultsFile(out_path) if out_path is not None else None
    outcomes: list[Outcome] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/red]"),
        TextColumn("{task.fields[earlier]}"),
        _RateColumn(),
        TimeRemainingColumn(),
        console=err,
    )
    task = progress.add_task(
        "waiting" if request.wait else "submitting", total=len(files), failed=0, earlier=""
    )
    earlier = failed = 0
    try:
        with progress:
            for outcome in batch.run(client, files, request, concurrency=concurrency, finished=finished):
                outcomes.append(outcome)
                failed += outcome.failed
                if outcome.earlier:
                    # Not work of this run: out of the total, so the rate and the ETA are this run's.
                    earlier += 1
                    progress.update(
                        task, total=len(files) - earlier, failed=failed, earlier=f"{earlier} done before"
                    )
                    continue
                if record is not None:
                    record.append(outcome)
                progress.update(task, advance=1, failed=failed)
    except KeyboardInterrupt:
        kept = f"; {len(outcomes)} recorded in {out_path}" if out_path is not None else ""
        err.print(f"interrupted after {len(outcomes)} of {len(files)} files{kept}: run it again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if record is not None:
            record.close()
    if out_path is not None:
        results.compact(out_path, [str(path) for path in files])
    return outcomes


class _RateColumn(ProgressColumn):
    """Files per second, over Rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} files/s" if speed else "- files/s", style="progress.data.speed")


def _summary(outcomes: Sequence[Outcome], *, waited: bool, retries: int) -> None:
    succeeded = sum(o.succeeded for o in outcomes)
    failed = [o for o in outcomes if o.failed]
    pending = len(outcomes) - succeeded - len(failed)
    earlier = sum(o.earlier for o in outcomes)
    parts = [f"{len(outcomes)} files", f"{succeeded} succeeded", f"{len(failed)} failed"]
    if pending or not waited:
        parts.append(f"{pending} submitted, not waited for")
    if earlier:
        parts.append(f"{earlier} finished in an earlier run")
    if retries:
        parts.append(f"{retries} requests sent again (429, 503 or no answer)")
    out.print(", ".join(parts))
    labels: Counter[str] = Counter()
    images: Counter[str] = Counter()
    for o in outcomes:
        if o.succeeded and o.detections:
            found = [str(d["label"]) for d in o.detections]
            labels.update(found)
            images.update(set(found))
    if labels:
        table = Table("label", "detections", "images", title="Detections (succeeded jobs)")
        for label, count in sorted(labels.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(escape(label), str(count), str(images[label]))
        out.print(table)
    if failed:
        table = Table("file", "code", "message", title="Failures")
        for o in failed[:_FAILURES_SHOWN]:
            error = o.error or {"code": o.status, "message": f"the job is {o.status}"}
            table.add_row(escape(o.path), escape(error.get("code", "")), escape(error.get("message", "")))
        out.print(table)
        if len(failed) > _FAILURES_SHOWN:
            out.print(f"... and {len(failed) - _FAILURES_SHOWN} more failures")
