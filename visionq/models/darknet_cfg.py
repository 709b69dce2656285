"""Darknet's .cfg format: `[section]` headers followed by `key=value` lines, `#` or `;` comments."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from visionq.errors import ModelError


@dataclass(frozen=True, slots=True)
class Section:
    kind: str
    options: dict[str, str]
    line: int

    def int_(self, key: str, default: int | None = None) -> int:
        return int(self._number(key, default, int))

    def float_(self, key: str, default: float | None = None) -> float:
        return float(self._number(key, default, float))

    def _number(self, key: str, default: float | None, kind: type[int] | type[float]) -> float:
        value = self._get(key, default)
        try:
            return kind(value)
        except ValueError as exc:
            raise ModelError(f"[{self.kind}] at line {self.line}: '{key}={value}' is not a number") from exc

    def str_(self, key: str, default: str | None = None) -> str:
        return str(self._get(key, default))

    def ints(self, key: str, default: list[int] | None = None) -> list[int]:
        raw = self.options.get(key)
        if raw is None:
            if default is None:
                raise ModelError(f"[{self.kind}] at line {self.line} lacks '{key}'")
            return default
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError as exc:
            raise ModelError(
                f"[{self.kind}] at line {self.line}: '{key}={raw}' is not a list of numbers"
            ) from exc

    def _get(self, key: str, default: object) -> Any:
        if key in self.options:
            return self.options[key]
        if default is None:
            raise ModelError(f"[{self.kind}] at line {self.line} lacks '{key}'")
        return default


def parse_cfg(text: str) -> list[Section]:
    """Parse a Darknet .cfg into its sections, in order."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"[#;]", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelError(f"cfg line {number}: malformed section header {line!r}")
            sections.append(Section(line[1:-1].strip().lower(), {}, number))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ModelError(f"cfg line {number}: expected 'key=value', got {line!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ModelError("cfg does not start with a [net] section")
    return sections
