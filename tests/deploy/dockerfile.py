"""The Dockerfile read as BuildKit reads it: parser directives, comments, `\\` continuations, stages."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FLAG = re.compile(r"--(?P<name>[a-z-]+)=(?P<value>\S+)")


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case) and the rest of its logical line."""

    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD, ENTRYPOINT or RUN; None for the shell form."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags(self) -> dict[str, list[str]]:
        """Its leading `--name=value` options (`--from`, `--mount`, `--chown`), by name."""
        found: dict[str, list[str]] = {}
        for word in shlex.split(self.args):
            match = _FLAG.fullmatch(word)
            if match is None:
                break
            found.setdefault(match["name"], []).append(match["value"])
        return found

    def operands(self) -> list[str]:
        """Its words after the leading options (COPY's sources and destination, USER's name...)."""
        words = self.exec_form() or shlex.split(self.args)
        while words and _FLAG.fullmatch(words[0]):
            words = words[1:]
        return words


@dataclass
class Stage:
    """A FROM and the instructions up to the next one."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Its ENV values (`KEY=value` pairs, as written: `$PATH` stays `$PATH`)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values


def instructions(path: Path) -> list[Instruction]:
    """Every instruction of the Dockerfile, its continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments, parser directives, blank lines (inside a continuation too)
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    return found


def stages(path: Path) -> list[Stage]:
    """The build stages in order; ARGs before the first FROM are left out."""
    found: list[Stage] = []
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.operands()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        elif found:
            found[-1].instructions.append(instruction)
    return found
