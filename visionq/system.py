"""What visionq reads of the machine it runs on: the cores it may use and the CPU's instruction sets."""

from __future__ import annotations

import os
import platform
from pathlib import Path

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and container cpusets)."""
    return len(os.sched_getaffinity(0))


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`avx2`, `avx512_vnni`, `amx_int8`...), or none."""
    return frozenset((_cpuinfo_field(cpuinfo, "flags") or "").split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name as Linux gives it (`AMD EPYC`...), or `unknown`."""
    return _cpuinfo_field(cpuinfo, "model name") or "unknown"


def _cpuinfo_field(cpuinfo: Path, name: str) -> str | None:
    """The first CPU's value of `name` in /proc/cpuinfo; None when unreadable or absent."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has x86 VNNI (AVX-512 VNNI, AVX-VNNI or AMX), or is not x86 at all.

    Not x86 (ARM's dot-product instructions do not saturate): True. x86 with unreadable flags: False.
    """
    if platform.machine().lower() not in _X86:
        return True
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags(cpuinfo))
