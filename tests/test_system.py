"""What visionq reads of the machine: the cores it may use, the CPU's flags, VNNI for int8."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from visionq.system import available_cores, cpu_flags, has_vnni

FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep avx avx2 fma"


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return path


def test_the_cores_are_those_this_process_may_run_on() -> None:
    assert available_cores() == len(os.sched_getaffinity(0)) >= 1


def test_cpu_flags_are_read_from_the_first_flags_line(tmp_path: Path) -> None:
    assert cpu_flags(cpuinfo(tmp_path, FLAGS + " avx512f")) == frozenset((FLAGS + " avx512f").split())
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", FLAGS, False),
        ("x86_64", FLAGS + " avx512f avx512_vnni", True),
        ("x86_64", FLAGS + " avx_vnni", True),
        ("AMD64", FLAGS + " amx_int8", True),
        ("aarch64", "fp asimd asimddp", True),
    ],
)
def test_has_vnni_reads_the_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: str, flags: str, expected: bool
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)

    assert has_vnni(cpuinfo(tmp_path, flags)) is expected


def test_an_x86_cpu_whose_flags_cannot_be_read_counts_as_without_vnni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    assert has_vnni(tmp_path / "missing") is False
