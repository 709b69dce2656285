"""Fixtures shared by every test package: the real model and photos (from PyPI), the real servers."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import redis
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.helpers import load_detector
from visionq import constants
from visionq.detect.detector import Detector
from visionq.models import sources
from visionq.models.cache import ModelCache
from visionq.store import migrate_database


@dataclass(frozen=True)
class DarknetFiles:
    cfg: Path
    weights: Path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir for the whole session, holding the pulled model and the sample photos."""
    return tmp_path_factory.mktemp("visionq-data")


@pytest.fixture(scope="session")
def model_cache(data_dir: Path) -> ModelCache:
    """The model cache with yolov4-tiny pulled the way users pull it."""
    cache = ModelCache(data_dir / "models")
    cache.pull(constants.DEFAULT_MODEL)
    return cache


@pytest.fixture(scope="session")
def detector(model_cache: ModelCache) -> Detector:
    """yolov4-tiny loaded once for the session, as a worker process loads it."""
    return load_detector(model_cache, constants.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def sample_paths(data_dir: Path) -> dict[str, Path]:
    """bus.jpg and zidane.jpg, verified against their pinned sha256."""
    return sources.ensure_samples(data_dir / "samples")


@pytest.fixture(scope="session")
def samples(sample_paths: dict[str, Path]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in sample_paths.items()}


@pytest.fixture(scope="session")
def darknet_files(tmp_path_factory: pytest.TempPathFactory) -> DarknetFiles:
    """The Darknet cfg and weights of yolov4-tiny, for OpenCV's reference implementation."""
    source = sources.SOURCES[constants.DEFAULT_MODEL]
    cfg, weights = sources.fetch_files(source.requirement, [source.cfg, source.weights])
    folder = tmp_path_factory.mktemp("darknet")
    (folder / "yolov4-tiny.cfg").write_bytes(cfg)
    (folder / "yolov4-tiny.weights").write_bytes(weights)
    return DarknetFiles(folder / "yolov4-tiny.cfg", folder / "yolov4-tiny.weights")


def unreachable(reason: str) -> NoReturn:
    """A server a test needs is down: skip on a developer's machine, fail in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# The maintenance database: test databases are created and dropped through it, never used themselves.
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
# The Redis database the tests may flush: visionq's tests own it, nothing else on the machine uses it.
REDIS_TEST_URL = "redis://127.0.0.1:6379/9"


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Returns create(): the URL of a new, empty PostgreSQL database; all are dropped after the session."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        admin.dispose()
        unreachable(f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}: {exc.orig}")
    created: list[str] = []

    def create() -> str:
        name = f"visionq_test_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_databases: Callable[[], str]) -> str:
    """One migrated PostgreSQL database for the session; each test module empties what it wrote."""
    url = postgres_databases()
    migrate_database(url)
    return url


def rabbitmq_reachable() -> bool:
    try:
        socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def rabbitmq_vhosts() -> Iterator[Callable[[], str]]:
    """Returns create(): the broker URL of a new RabbitMQ vhost; all are deleted after the session.

    A vhost per test keeps one test's workers from consuming another's messages.
    """
    if not rabbitmq_reachable():
        unreachable(f"RabbitMQ is unreachable at {RABBITMQ_HOST}:{RABBITMQ_PORT}")
    created: list[str] = []

    def create() -> str:
        vhost = f"visionq-test-{secrets.token_hex(6)}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        created.append(vhost)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"

    yield create
    for vhost in created:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database for the session's broker tests, flushed before and after."""
    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        client.close()
        unreachable(f"Redis is unreachable at {REDIS_TEST_URL}: {exc}")
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()
