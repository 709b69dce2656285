"""What a worker process runs jobs with: the job store and loaded models, built once per process.

Prefork children build their own Runtime after the fork (`worker_process_init`): database connections
and ONNX Runtime sessions must never be shared across a fork. Pools that run tasks in the worker's own
process (solo, threads) and in-process calls build it on the first task instead.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import signals
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from visionq.config import Settings
from visionq.detect.detector import Detector, available_cores
from visionq.errors import VisionqError
from visionq.models.cache import ModelCache
from visionq.store import JobStore, create_engine_for, migrate
from visionq.worker import embedded

logger = logging.getLogger(__name__)

_SLOT_ATTRIBUTE = "visionq_runtime"


class Runtime:
    """One process's job store and detectors (one per model name, loaded on first use)."""

    def __init__(self, settings: Settings, engine: Engine, *, threads: int) -> None:
        self.settings = settings
        self.engine = engine
        self.store = JobStore(engine)
        self.cache = ModelCache(settings.models_dir)
        self.threads = threads
        self._detectors: dict[str, Detector] = {}
        self._lock = threading.Lock()  # the threads pool shares one Runtime

    @classmethod
    def create(cls, settings: Settings, *, concurrency: int = 1) -> Runtime:
        """A Runtime whose detectors use this process's share of the cores; the default model warmed up.

        A default model that cannot be loaded is logged, not raised: its jobs will fail with the reason.
        """
        threads = settings.threads or max(1, available_cores() // max(1, concurrency))
        runtime = cls(settings, create_engine_for(settings.resolved_database_url), threads=threads)
        try:
            runtime.detector(settings.model).warm_up()
        except VisionqError as exc:
            logger.warning("default model %r not loaded: %s", settings.model, exc)
        return runtime

    def detector(self, name: str) -> Detector:
        """The loaded detector for model `name`, pulled first if it is missing and its source is known."""
        with self._lock:
            detector = self._detectors.get(name)
            if detector is None:
                if not self.cache.has(name):
                    logger.info("pulling model %r", name)
                    self.cache.pull(name)
                detector = Detector.from_cache(
                    self.cache, name, threads=self.threads, max_pixels=self.settings.max_image_pixels
                )
                self._detectors[name] = detector
                logger.info("loaded model %r with %d inference threads", name, self.threads)
            return detector

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


class RuntimeSlot:
    """Holds the Runtime of the current process for one Celery app, and the worker signals building it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Any = None
        self._worker: Any = None  # the WorkController, set in the worker's main process
        self._worker_pid = 0
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def attach(self, app: Any) -> None:
        """Make this the slot of `app` and connect the worker signals (weakly: apps may come and go)."""
        self._app = app
        setattr(app, _SLOT_ATTRIBUTE, self)
        signals.worker_init.connect(self._on_worker_init)
        signals.worker_process_init.connect(self._on_process_init)
        signals.worker_process_shutdown.connect(self._on_process_shutdown)

    def get(self) -> Runtime:
        """This process's Runtime, built now if no signal built it (solo/threads pool, in-process use)."""
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._build(concurrency=1)
            assert self._runtime is not None
            return self._runtime

    def _build(self, *, concurrency: int) -> None:
        self._runtime = Runtime.create(self.settings, concurrency=concurrency)
        self._pid = os.getpid()

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """In the worker's main process, before the pool forks: migrate, tidy, pull the default model."""
        if getattr(sender, "app", None) is not self._app:
            return
        self._worker, self._worker_pid = sender, os.getpid()
        engine = create_engine_for(self.settings.resolved_database_url)
        try:
            migrate(engine)
        except (OperationalError, InterfaceError) as exc:
            # Start anyway: the tasks retry while the database is away, and a later start migrates.
            logger.warning("database unreachable, not migrated: %s", exc)
        finally:
            engine.dispose()  # no connection may survive into the children
        if self.settings.embedded_broker:
            embedded.prune_stale_messages(self.settings.broker_dir)
        cache = ModelCache(self.settings.models_dir)
        if not cache.has(self.settings.model):
            logger.info("pulling default model %r", self.settings.model)
            try:
                cache.pull(self.settings.model)
            except VisionqError as exc:
                # Start anyway and say why: its jobs fail with this reason, jobs for other models run.
                logger.error("default model %r is not available: %s", self.settings.model, exc)

    def _on_process_init(self, **_: Any) -> None:
        """In each prefork child before it takes jobs (and in a solo worker): engine, session, warm-up."""
        if self._worker is None:
            return  # another app's worker, or a spawned child that never saw worker_init
        if os.getpid() == self._worker_pid:
            concurrency = 1  # the solo pool sends this signal too, and runs one task at a time
        else:
            concurrency = getattr(self._worker, "max_concurrency", None) or self._worker.concurrency
        with self._lock:
            self._build(concurrency=int(concurrency))

    def _on_process_shutdown(self, **_: Any) -> None:
        if self._runtime is not None and self._pid == os.getpid():
            self._runtime.close()
            self._runtime = None


def runtime_slot(app: Any) -> RuntimeSlot:
    """The RuntimeSlot attached to `app` by `create_celery_app`."""
    slot = getattr(app, _SLOT_ATTRIBUTE, None)
    if not isinstance(slot, RuntimeSlot):
        raise RuntimeError("this Celery app was not made by visionq.worker.app.create_celery_app")
    return slot
