"""Worker fixtures: a RabbitMQ vhost and a PostgreSQL database for the session, real worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine

from tests.helpers import settings_env, wait_until
from visionq import constants
from visionq.config import Settings
from visionq.models.cache import ModelCache
from visionq.store import ImageIn, JobStore, create_engine_for, migrate

PARAMS = {
    "conf": constants.DEFAULT_CONFIDENCE,
    "iou": constants.DEFAULT_IOU,
    "classes": None,
    "max_det": constants.DEFAULT_MAX_DETECTIONS,
}

# A worker subprocess imports Celery and forks its child within a few seconds; a minute means it hung.
WORKER_START_TIMEOUT_S = 60.0


def image_in(data: bytes, content_type: str = "image/jpeg") -> ImageIn:
    """An ImageIn as the API would build it (size read from the header; (0, 0) when unreadable)."""
    try:
        with Image.open(BytesIO(data)) as img:
            width, height = img.size
    except OSError:
        width, height = 0, 0
    return ImageIn.of(data, content_type=content_type, width=width, height=height)


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_vhosts: Callable[[], str]) -> str:
    """A RabbitMQ vhost for the worker tests of this session."""
    return rabbitmq_vhosts()


@pytest.fixture(scope="session")
def worker_data_dir(tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache) -> Path:
    """A data dir of the worker tests' own (broker folders, SQLite) sharing the session's pulled model."""
    folder = tmp_path_factory.mktemp("worker-data")
    (folder / "models").symlink_to(model_cache.root.resolve(), target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def rabbit_settings(
    rabbitmq_url: str, postgres_databases: Callable[[], str], worker_data_dir: Path
) -> Settings:
    """RabbitMQ + PostgreSQL, as in production."""
    return Settings(data_dir=worker_data_dir, broker_url=rabbitmq_url, database_url=postgres_databases())


@pytest.fixture(scope="session")
def embedded_settings(tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache) -> Settings:
    """The filesystem broker and SQLite under a data dir of their own, as on one machine."""
    folder = tmp_path_factory.mktemp("embedded-data")
    (folder / "models").symlink_to(model_cache.root.resolve(), target_is_directory=True)
    return Settings(data_dir=folder, broker_url=None, database_url=None)


def make_store(settings: Settings) -> Iterator[JobStore]:
    engine: Engine = create_engine_for(settings.resolved_database_url)
    migrate(engine)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def rabbit_store(rabbit_settings: Settings) -> Iterator[JobStore]:
    yield from make_store(rabbit_settings)


@pytest.fixture(scope="session")
def embedded_store(embedded_settings: Settings) -> Iterator[JobStore]:
    yield from make_store(embedded_settings)


# The stock `celery` command on visionq's app module, as operators run it.
CELERY = [str(Path(sys.executable).with_name("celery")), "-A", "visionq.worker.celery_app"]


class WorkerProcess:
    """`celery worker` as operators start it, in a process group of its own so it can be killed whole."""

    def __init__(self, settings: Settings, name: str, log_dir: Path, *, concurrency: int = 1) -> None:
        self.settings = settings
        self.name = name
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.log_path = log_dir / f"{name}.log"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [*CELERY, "worker", "--concurrency", str(self.concurrency)]
        argv += ["--pool", "prefork", "-Q", constants.QUEUE, "-n", f"{self.name}@%h", "-l", "info"]
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as log:
            # cwd: the data dir, so no developer's .env is read; a session of its own, for killpg.
            self.proc = subprocess.Popen(
                argv,
                env=settings_env(self.settings),
                cwd=self.settings.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        try:
            self.wait_for_log(" ready.", timeout_s=WORKER_START_TIMEOUT_S)
        except BaseException:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout_s: float = 30.0) -> None:
        """Until `text` is in this start's log; fails (with the log) if the worker exits or time runs out."""

        def logged() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited:\n{self.log()[-4000:]}")
            return text in self.log()

        wait_until(logged, timeout_s=timeout_s, what=f"worker {self.name} logs {text!r}", interval_s=0.01)

    def signal(self, signum: int) -> None:
        """Send `signum` to the worker and its pool children."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    def signal_children(self, signum: int) -> None:
        """Send `signum` to the pool children only (Linux: /proc lists a process's children)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert children, "the worker has no pool child"
        for pid in children:
            os.kill(int(pid), signum)

    def kill(self) -> None:
        """SIGKILL the whole worker: no warm shutdown, no ack, as when a machine dies."""
        if self.proc is None:
            return
        try:
            self.signal(signal.SIGKILL)  # the group: pool children too, even if the parent is gone
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@contextmanager
def running_worker(
    settings: Settings, name: str, log_dir: Path, *, concurrency: int = 1
) -> Iterator[WorkerProcess]:
    """A started worker, killed on exit (before the vhost or database it uses is dropped).

    SIGKILL: the tests assert nothing about shutdown, and a warm one idles seconds on the filesystem broker.
    """
    worker = WorkerProcess(settings, name, log_dir, concurrency=concurrency)
    try:
        worker.start()
        yield worker
    finally:
        worker.kill()


@pytest.fixture(scope="session")
def rabbit_worker(
    tmp_path_factory: pytest.TempPathFactory, rabbit_settings: Settings, rabbit_store: JobStore
) -> Iterator[WorkerProcess]:
    """One worker on RabbitMQ + PostgreSQL shared by the session (a test that kills it restarts it)."""
    with running_worker(rabbit_settings, "rabbit", tmp_path_factory.mktemp("rabbit-worker")) as worker:
        yield worker


@pytest.fixture(scope="session")
def embedded_worker(
    tmp_path_factory: pytest.TempPathFactory, embedded_settings: Settings, embedded_store: JobStore
) -> Iterator[WorkerProcess]:
    """One worker on the filesystem broker + SQLite."""
    with running_worker(embedded_settings, "embedded", tmp_path_factory.mktemp("embedded-worker")) as worker:
        yield worker
