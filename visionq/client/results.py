"""What became of each file: one `Outcome`, and the JSON-lines file that keeps them across runs.

The file is appended to (and flushed) as each file finishes, so a run that is interrupted leaves every
result it had. A later run with the same file skips what is recorded as finished for the same request
(the line's `key`, the Idempotency-Key, names the file's content and the parameters), and a run that
ends rewrites the file with one line per file, its latest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Final

# The API's codes for bytes that are no image it can read: the same file gets the same answer again.
# Every other refusal (a key, a limit, a server down, an unknown model) may go another way next time.
_PERMANENT_REFUSALS: Final = frozenset(
    {"empty", "not_an_image", "unsupported_format", "too_large", "corrupt"}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One file's result: the job it got (if any), its status, and its detections or its error."""

    path: str
    sha256: str | None  # None: the file could not be read
    key: str | None
    job_id: str | None
    status: str  # the job's status, or "failed" when no job was made
    detections: list[dict[str, Any]] | None = None
    error: dict[str, str] | None = None  # {"code", "message"}
    earlier: bool = False  # recorded by an earlier run, not sent in this one

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> bool:
        """Did not get to a result: refused, broken off, or its job failed, was cancelled or timed out."""
        return self.error is not None or self.status in ("failed", "cancelled")

    @property
    def finished(self) -> bool:
        """Nothing left to ask: the job ended (asking again returns that job), or the server refused
        the bytes as no image."""
        if self.job_id is not None:
            return self.status in ("succeeded", "failed", "cancelled")
        return self.error is not None and self.error.get("code") in _PERMANENT_REFUSALS

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "key": self.key,
            "job_id": self.job_id,
            "status": self.status,
        }
        if self.detections is not None:
            line["detections"] = self.detections
        if self.error is not None:
            line["error"] = self.error
        return line

    @classmethod
    def of_line(cls, line: dict[str, Any]) -> Outcome:
        return cls(
            path=str(line["path"]),
            sha256=line.get("sha256"),
            key=line.get("key"),
            job_id=line.get("job_id"),
            status=str(line["status"]),
            detections=line.get("detections"),
            error=line.get("error"),
        )


def read(path: Path) -> Iterator[Outcome]:
    """The outcomes recorded in `path`, oldest first; none when it does not exist. A line cut off by
    an interrupted write (or not ours) is passed over: its file is simply not finished."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for raw in text.splitlines():
        try:
            value = json.loads(raw)
            yield Outcome.of_line(value)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue


def finished(path: Path) -> dict[tuple[str, str], Outcome]:
    """The finished outcomes recorded in `path`, by (path, key): what a rerun need not send again."""
    # A line that is not finished after one that is (a rerun broke off) does not undo that end.
    return {
        (outcome.path, outcome.key): replace(outcome, earlier=True)
        for outcome in read(path)
        if outcome.key is not None and outcome.finished
    }


class ResultsFile:
    """An open results file: `append` writes one outcome as a line and flushes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        # A line cut off by a kill would swallow the next one: start on a line of our own.
        if not _ends_a_line(path):
            self._file.write("\n")

    def append(self, outcome: Outcome) -> None:
        self._file.write(json.dumps(outcome.line()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _ends_a_line(path: Path) -> bool:
    """True when `path` is empty or its last byte ends a line."""
    with path.open("rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def compact(path: Path, order: Sequence[str] = ()) -> None:
    """Rewrite `path` with one line per file, its latest: the files of `order` first, in that order,
    then the others in the order they first appeared. Atomically (a new file renamed over the old), so
    an interruption leaves one or the other."""
    latest: dict[str, Outcome] = {}
    for outcome in read(path):
        latest[outcome.path] = outcome
    ranks = {name: rank for rank, name in enumerate(order)}
    first = {name: rank for rank, name in enumerate(latest)}
    ordered = sorted(latest.values(), key=lambda o: (ranks.get(o.path, len(ranks)), first[o.path]))
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for outcome in ordered:
            f.write(json.dumps(outcome.line()) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
