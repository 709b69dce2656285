"""Debian's Chromium for the page's tests: installed from the distribution when it is missing.

Playwright's own `playwright install` downloads a browser build from outside the package registries,
which CI cannot reach; Debian's package is reachable everywhere the tests run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from tests.conftest import unreachable

CHROMIUM: Final = Path("/usr/bin/chromium")
# No sandbox: CI runs as root, where Chromium refuses its sandbox; no GPU: there is none.
CHROMIUM_ARGS: Final = ("--headless", "--no-sandbox", "--disable-gpu")
_INSTALL: Final = ("apt-get", "install", "-y", "chromium")
# An install of Chromium and its libraries takes a minute or two; ten means apt is stuck.
_APT_TIMEOUT_S: Final = 600


def ensure_chromium() -> Path:
    """/usr/bin/chromium, installed with apt-get when missing (after `apt-get update` if need be).

    Where it cannot be installed the test skips on a developer's machine and fails in CI.
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        unreachable(f"{CHROMIUM} is missing and there is no apt-get to install it")
    result = _apt(*_INSTALL)
    if result.returncode != 0:
        # A fresh machine's package lists may be empty or older than the archive.
        _apt("apt-get", "update")
        result = _apt(*_INSTALL)
    if result.returncode != 0 or not CHROMIUM.exists():
        unreachable(f"`{' '.join(_INSTALL)}` failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return CHROMIUM


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=_APT_TIMEOUT_S,
    )
