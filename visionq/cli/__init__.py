"""The `visionq` command line."""

from __future__ import annotations

import typer

from visionq.cli import bench, dead, detect, keys, models, serve, submit, up

app = typer.Typer(
    name="visionq",
    help="Asynchronous object detection: YOLO on ONNX Runtime behind Celery workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.add_typer(keys.app, name="keys")
app.command("detect")(detect.detect)
app.command("api")(serve.api)
app.command("worker")(serve.worker)
app.command("beat")(serve.beat)
app.command("flower")(serve.flower)
app.command("up")(up.up)
app.command("dead-letters")(dead.dead_letters)
app.command("submit")(submit.submit)


def main() -> None:
    app()
