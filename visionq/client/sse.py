"""Server-Sent Events, read from a stream's lines: just what GET /v1/jobs/{id}/events sends.

The format (WHATWG HTML, "server-sent events"): `field: value` lines, an event ends at a blank line,
`data` lines of one event are joined with newlines, and a line starting with `:` is a comment (the
server's keep-alive). `id` and `retry` are read past: a reconnect here starts from the job's current
state, which the stream's first event always is, so there is nothing to resume from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    event: str  # "message" when the server named none
    data: str


def parse(lines: Iterable[str]) -> Iterator[Event | None]:
    """The events in `lines` (without their line endings); a keep-alive comment yields None, so that
    a reader can look at its clock while the server has nothing to say."""
    name, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(name or "message", "\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            yield None
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    # An event not ended by a blank line was cut off with the connection: the spec drops it too.
