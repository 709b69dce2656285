"""compose.yaml read as Compose reads it: YAML (merge keys included), then `${VAR}` interpolation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt},
# $NAME, and $$ (a literal $): the forms the Compose Specification's interpolation section lists.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class MissingVariable(ValueError):
    """A `${NAME:?error}` whose variable is unset or empty: Compose refuses to start."""


def load(path: Path) -> dict[str, Any]:
    """The file as YAML, before interpolation (merge keys resolved, as Compose resolves them)."""
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(value: Any, variables: Mapping[str, str]) -> Any:
    """Every string in `value` with its variables replaced from `variables`, as Compose does."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda match: _substitute(match, variables), value)
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    return value


def variables_used(value: Any) -> set[str]:
    """The names of the variables `value` interpolates."""
    if isinstance(value, str):
        return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(value) if not m["escaped"]}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return set().union(*(variables_used(item) for item in items))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of its two forms, as a mapping."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def seconds(duration: str) -> float:
    """A Compose duration (`330s`, `5m30s`, `1h`) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"{duration!r} is not a Compose duration")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _substitute(match: re.Match[str], variables: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["braced"] or match["bare"]
    op, arg = match["op"] or "", match["arg"] or ""
    value = variables.get(name)
    unset = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        return arg if unset else str(value)
    if op.endswith("?"):
        if unset:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return str(value)
    if op.endswith("+"):
        return "" if unset else arg
    return value or ""
