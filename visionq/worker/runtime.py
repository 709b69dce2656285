"""What a worker process runs jobs with: the job store and the loaded models (see `WorkerApp.runtime`)."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine

from visionq.config import Settings
from visionq.detect.detector import Detector
from visionq.errors import VisionqError
from visionq.models.cache import ModelCache
from visionq.observe.metrics import WorkerMetrics
from visionq.store import JobStore, create_engine_for
from visionq.system import available_cores

logger = logging.getLogger(__name__)


class Runtime:
    """One process's job store and detectors (one per model name, loaded on first use)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore,
        models: ModelCache,
        threads: int,
        engine: Engine | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        """`engine`, when given, is the store's engine, owned by the runtime and disposed by `close`;
        `metrics` what the jobs are counted in (by default a registry of the runtime's own)."""
        self.settings = settings
        self.metrics = WorkerMetrics() if metrics is None else metrics
        self.store = store
        self.models = models
        self.threads = threads
        self._engine = engine
        self._detectors: dict[str, Detector] = {}
        self._lock = threading.Lock()  # the threads pool shares one Runtime

    @classmethod
    def create(
        cls, settings: Settings, *, inference_processes: int = 1, metrics: WorkerMetrics | None = None
    ) -> Runtime:
        """A Runtime over `settings`' database and model cache, whose detectors use this process's share
        of the cores (`VISIONQ_THREADS`, or the cores split between `inference_processes`)."""
        threads = settings.threads or max(1, available_cores() // max(1, inference_processes))
        engine = create_engine_for(settings.resolved_database_url)
        return cls(
            settings,
            store=JobStore(engine),
            models=ModelCache(settings.models_dir),
            threads=threads,
            engine=engine,
            metrics=metrics,
        )

    def detector(self, name: str) -> Detector:
        """The loaded detector for model `name`, pulled first if it is missing and its source is known."""
        with self._lock:
            detector = self._detectors.get(name)
            if detector is None:
                manifest, path = self.models.ensure(name)
                loading = time.perf_counter()
                detector = Detector(
                    path,
                    manifest,
                    threads=self.threads,
                    runtime=self.settings.runtime,
                    precision=self.settings.precision,
                    max_pixels=self.settings.max_image_pixels,
                )
                self._detectors[name] = detector
                self.metrics.model_loaded(name, time.perf_counter() - loading)
                logger.info(
                    "loaded model %r on %s, %d inference thread(s)", name, detector.runtime, self.threads
                )
            return detector

    def warm_up(self) -> None:
        """Load the default model and run one inference, so the first job does not pay for either.

        A default model that cannot be loaded is logged, not raised: its jobs will fail with the reason.
        """
        try:
            self.detector(self.settings.model).warm_up()
        except VisionqError as exc:
            logger.warning("default model %r not loaded: %s", self.settings.model, exc)

    def close(self) -> None:
        """Release the database connections of the engine this runtime owns."""
        if self._engine is not None:
            self._engine.dispose()
