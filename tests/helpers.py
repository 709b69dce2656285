"""Helpers the test packages share, one copy each: crafted images, waiting on conditions, visionq's
process environment, and faults injected at the database driver."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine, event

from visionq import constants
from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.models.cache import ModelCache
from visionq.queue import create_celery_app
from visionq.store import Job, JobStore

T = TypeVar("T")

# A job on an idle worker takes well under a second; half a minute means it is stuck.
JOB_TIMEOUT_S = 30.0


def crafted_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written by hand, for what Pillow cannot save: 16-bit RGB, absurd sizes, damaged data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real side x side 1-bit PNG whose rows compress to almost nothing (30000: ~110 KB on disk,
    900 million pixels decoded)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + side // 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return crafted_png(side, side, 1, 0, idat)


def wait_until(probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    """`probe()`'s first result that is not None (or False); fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(interval_s)


def wait_for_job(store: JobStore, job_id: str, *, timeout_s: float = JOB_TIMEOUT_S) -> Job:
    """The job once it is terminal; fails the test when it is not within the timeout."""

    def terminal() -> Job | None:
        job = store.get(job_id)
        assert job is not None, f"job {job_id} vanished"
        return job if job.status.terminal else None

    return wait_until(terminal, timeout_s=timeout_s, what=f"job {job_id} finished")


def pypi_unreachable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make pip, in this process and those it starts, see what it sees offline: no index, nowhere to look."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder / "nowhere"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")


def publish_raw(settings: Settings, messages: list[tuple[bytes, str, str, dict[str, Any]]]) -> None:
    """Put (body, content type, encoding, headers) messages on the jobs' queue as they are, bypassing
    visionq's publisher: what a stray or hostile producer sends."""
    app = create_celery_app(settings)
    try:
        with app.producer_pool.acquire(block=True) as producer:
            for body, content_type, encoding, headers in messages:
                producer.publish(
                    body,
                    exchange=constants.QUEUE,
                    routing_key=constants.QUEUE,
                    content_type=content_type,
                    content_encoding=encoding,
                    headers=headers,
                )
    finally:
        app.close()


def settings_of(**values: Any) -> Settings:
    """Settings from these values only: no environment file (the environment still counts)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' option


def visionq_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a visionq process: this one's minus any VISIONQ_ setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    env["VISIONQ_DATA_DIR"] = str(data_dir)
    env.update({f"VISIONQ_{k.upper()}": v for k, v in settings.items()})
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a visionq process configured by `settings`' data dir, broker and database."""
    return visionq_env(
        settings.data_dir, broker_url=settings.broker_url or "", database_url=settings.database_url or ""
    )


def load_detector(cache: ModelCache, name: str, **options: Any) -> Detector:
    """The cached model `name` loaded, as a worker loads it."""
    manifest, path = cache.get(name)
    return Detector(path, manifest, **options)


@contextmanager
def failing_statements(
    engine: Engine, error: Callable[[], BaseException], *, times: int, when: Callable[[str], bool] = bool
) -> Iterator[list[str]]:
    """The first `times` statements for which `when(sql)` holds raise `error()` inside the driver call.

    A DBAPI error raised there is wrapped by SQLAlchemy exactly as one from the server would be, so the
    code under test meets a real outage path, not a patched method. Yields the statements that failed.
    """
    failed: list[str] = []

    def fail(_cursor: Any, statement: str, _parameters: Any, _context: Any) -> bool:
        if len(failed) < times and when(statement):
            failed.append(statement)
            raise error()
        return False  # not handled here: the driver runs it

    event.listen(engine, "do_execute", fail, insert=True)  # before visionq's own do_execute hook
    try:
        yield failed
    finally:
        event.remove(engine, "do_execute", fail)


class Heard:
    """What a job-events listener was told, from its thread: (job id, status) changes and gaps."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.gaps = 0
        self._lock = threading.Lock()

    def change(self, job_id: str, status: str) -> None:
        with self._lock:
            self.changes.append((job_id, status))

    def gap(self) -> None:
        with self._lock:
            self.gaps += 1

    def of(self, job_id: str) -> list[str]:
        """The statuses heard for `job_id`, in order."""
        with self._lock:
            return [status for jid, status in self.changes if jid == job_id]

    def count(self) -> int:
        with self._lock:
            return len(self.changes)


def slow_png() -> bytes:
    """A 6000 x 6000 PNG: a few tenths of a second per detection, so a test can act while one runs."""
    ramp = (np.indices((6000, 6000)).sum(0) % 251).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.stack([ramp, ramp.T, ramp // 2], -1)).save(out, "PNG", compress_level=1)
    return out.getvalue()
