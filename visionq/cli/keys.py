"""`visionq keys new`: an API key for the client, and the line that lets it in for the API's key file."""

from __future__ import annotations

from typing import Annotated

import typer

from visionq.cli.common import err, out

app = typer.Typer(help="API keys (VISIONQ_API_KEYS_FILE).", no_args_is_help=True)


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The key's name: letters, digits, '.', '_' or '-'.")],
) -> None:
    """Print a new random key (give it to the client) and its `sha256 name` line (append it to the file
    VISIONQ_API_KEYS_FILE names). visionq keeps only the hash; a lost key is replaced, not recovered."""
    from visionq.api.access import KEY_NAME, hash_key, new_key

    if not KEY_NAME.match(name):
        err.print("[red]a key's name is 1-64 letters, digits, '.', '_' or '-'[/red]")
        raise typer.Exit(2)
    key = new_key()
    out.print(f"key:  {key}")
    out.print(f"line: {hash_key(key)} {name}")
