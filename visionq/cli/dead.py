"""`visionq dead-letters`: the messages workers could not run, parked in the dead-letter queue."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visionq import constants
from visionq.cli.common import load_settings, out


def dead_letters(
    limit: Annotated[int, typer.Option(min=1, help="Messages to list at most.")] = 20,
    purge: Annotated[bool, typer.Option(help="Delete every parked message (after listing them).")] = False,
) -> None:
    """List the messages workers parked in the dead-letter queue (why, task, size; never a body), and
    with --purge delete them. Listing leaves them parked."""
    from visionq.queue import create_celery_app
    from visionq.queue.dead import DeadLetters

    app = create_celery_app(load_settings())
    try:
        letters = DeadLetters(app)
        count, found = letters.peek(limit=limit)
        table = Table(title=f"{count} message(s) in {constants.DEAD_LETTER_QUEUE}")
        for column in ("why", "task", "content type", "bytes"):
            table.add_column(column)
        for letter in found:
            table.add_row(
                letter.reason, letter.task or "-", letter.content_type or "-", f"{letter.size_bytes:,}"
            )
        out.print(table)
        if purge:
            out.print(f"purged {letters.purge()} message(s)")
    finally:
        app.close()
