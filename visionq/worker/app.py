"""The worker's Celery app: the queue's wire configuration, the consumer's delivery guarantees, visionq's
tasks, and the one Runtime each worker process runs them with."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

from celery import Celery, bootsteps, signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from kombu.exceptions import KombuError

from visionq import constants
from visionq.config import Settings
from visionq.errors import DatabaseUnavailable, VisionqError
from visionq.models.cache import ModelCache
from visionq.observe.logs import use_json_in_celery
from visionq.observe.metrics import WorkerMetrics
from visionq.queue import embedded
from visionq.queue.app import BROKER_CONNECT_TIMEOUT_S, configure, is_amqp, jobs_queue
from visionq.store import migrate_database
from visionq.worker.runtime import Runtime

logger = logging.getLogger(__name__)

# A worker refused its queue (it exists with another type) exits with this status: the configuration's
# fault (sysexits' EX_CONFIG), which a restart does not mend. Celery itself would exit 0 after a traceback.
EXIT_QUEUE_CONFLICT = 78
_PRECONDITION_FAILED = 406  # AMQP's reply code for a declaration that differs from what exists

# Seconds a prefork child that got a SIGTERM during a task waits to learn whether the main process got
# it too (a SIGTERM to the whole group: finish the task) or sent it (a cancelled task: end now).
GROUP_TERM_WAIT_S = 1.0

# A prefork child loads its model and runs a warm-up inference before it reports up; billiard's
# default of 4 s would kill children loading a big model on a busy machine.
PROCESS_INIT_TIMEOUT_S = 60.0

# AMQP heartbeat of the worker's broker connections. RabbitMQ hands a silent consumer's unacked jobs to
# another worker only once it misses two to three heartbeat periods: with Celery's 120 s (RabbitMQ
# negotiates 60 s) a worker cut off by a partition held its job for over 150 s (tests/e2e/
# test_partition.py); at 10 s (RabbitMQ's advice: 5-20 s) it is 20-30 s. The prefork pool's main
# process sends them, never blocked by a task.
BROKER_HEARTBEAT_S = 10


class WorkerApp(Celery):  # type: ignore[misc]  # Celery ships no type information
    """The app `visionq worker` (and `celery -A visionq.worker.celery_app`) runs.

    `runtime` is this process's Runtime, built on first use: after the fork in a prefork child, since
    database connections and ONNX Runtime sessions never survive one. Two worker hooks surround it:
    before the pool starts, the main process migrates the database, tidies the embedded broker and
    pulls the default model (`_Prepare`); then each child warms its runtime up before it takes a job.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__("visionq", include=["visionq.worker.tasks"])
        configure(self, settings)
        limit = settings.task_time_limit
        self.conf.update(
            # At-least-once: a message is acked after its task ran, and requeued if the child died.
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            # A hard time limit requeues too: the redelivery counts an attempt, and the task fails the
            # job once it has been delivered more than MAX_DELIVERIES times (a job that always hangs).
            task_acks_on_timeout=False,
            worker_prefetch_multiplier=1,
            worker_eta_task_limit=constants.MAX_HELD_MESSAGES,
            task_time_limit=limit,
            # The soft limit raises inside the task, which records a `timeout` failure before the kill.
            task_soft_time_limit=_soft_limit(limit),
            # Tasks still running when the connection drops will be redelivered: cancel them, not finish
            # them twice (the store would refuse the second result, but the CPU would be spent twice).
            worker_cancel_long_running_tasks_on_connection_loss=True,
            worker_proc_alive_timeout=PROCESS_INIT_TIMEOUT_S,
            broker_heartbeat=BROKER_HEARTBEAT_S,
            # Flower's live view (task-received/started/succeeded/failed) is switched on by Flower
            # itself, every 5 s while it runs: unwatched, the events cost 1.3 ms of CPU per job
            # (worker and RabbitMQ, README Performance) for nobody.
            worker_send_task_events=False,
            # Messages it cannot run go to the dead-letter queue, logged in one line (consumer.py).
            worker_consumer="visionq.worker.consumer:Consumer",
        )
        self.settings = settings
        self.metrics = WorkerMetrics()  # made before the fork; each child counts into files of its own pid
        self._runtime: Runtime | None = None
        self._runtime_pid = 0
        self._runtime_lock = threading.Lock()  # the threads pool's tasks share one Runtime
        self._inference_processes = 1
        self.steps["worker"].add(_Prepare)
        logging.getLogger("celery.bootsteps").addFilter(_QUIET_GOSSIP_RESTART)  # once: the same filter
        signals.worker_process_init.connect(self._warm_up)
        signals.worker_process_init.connect(_DrainOnGroupTerm.install)
        signals.worker_shutting_down.connect(_DrainOnGroupTerm.draining)
        signals.worker_process_shutdown.connect(self._child_exits)
        if settings.log_format == "json":
            use_json_in_celery()

    @property
    def runtime(self) -> Runtime:
        """This process's Runtime: its job store and loaded models, built once per process."""
        with self._runtime_lock:
            if self._runtime is None or self._runtime_pid != os.getpid():
                self._runtime = Runtime.create(
                    self.settings, inference_processes=self._inference_processes, metrics=self.metrics
                )
                self._runtime_pid = os.getpid()
            return self._runtime

    def prepare(self, *, inference_processes: int) -> None:
        """In the worker's main process, before the pool starts: migrate, tidy, pull the default model.

        `inference_processes` run detections on this machine at once and split its cores between them.
        """
        self._inference_processes = inference_processes
        self.metrics.concurrency.set(inference_processes)
        try:
            migrate_database(self.settings.resolved_database_url)
        except DatabaseUnavailable as exc:
            # Start anyway: the tasks retry while the database is away, and a later start migrates.
            logger.warning("database unreachable, not migrated: %s", exc)
        if self.settings.embedded_broker:
            embedded.prune_stale_messages(self.settings.broker_dir)
        if is_amqp(self.settings.resolved_broker_url):
            self._check_queue()
        try:
            ModelCache(self.settings.models_dir).ensure(self.settings.model)
        except VisionqError as exc:
            # Start anyway and say why: its jobs fail (or wait, if PyPI is away) with this reason.
            logger.error("default model %r is not available: %s", self.settings.model, exc)

    def _check_queue(self) -> None:
        """Declare the jobs' queue once, before the pool starts: a queue that exists with another type
        (VISIONQ_QUEUE_TYPE changed; RabbitMQ never changes a queue's type) stops the worker with one
        line that says what to do, not a traceback and exit status 0 from Celery's consumer."""
        queue = jobs_queue(self)
        with self.connection_for_write() as conn:
            unreachable = (OSError, KombuError, *conn.connection_errors)
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_CONNECT_TIMEOUT_S)
                queue.bind(conn.default_channel).declare()
            except conn.channel_errors as exc:
                if getattr(exc, "reply_code", None) != _PRECONDITION_FAILED:
                    raise
                logger.critical(
                    "RabbitMQ refused queue %r as a %s queue (VISIONQ_QUEUE_TYPE): it exists with other "
                    "arguments, and a queue's type cannot change. Set VISIONQ_QUEUE_TYPE to the existing "
                    "queue's type, or stop the API, let the workers drain the queue, delete it "
                    "(rabbitmqctl delete_queue %s -p VHOST) and start them again. RabbitMQ said: %s",
                    queue.name,
                    self.settings.queue_type,
                    queue.name,
                    exc,
                )
                raise SystemExit(EXIT_QUEUE_CONFLICT) from None
            except unreachable as exc:
                # Start anyway: the consumer connects (and declares the queue) once the broker is back.
                logger.warning("broker unreachable, queue %r not checked: %s", queue.name, exc)

    def _warm_up(self, **_: Any) -> None:
        """In each prefork child (and a solo worker) before it takes jobs: load the default model."""
        self.runtime.warm_up()
        self.metrics.child_started()

    def _child_exits(self, **_: Any) -> None:
        """In a prefork child about to exit (Celery's worker_process_shutdown)."""
        self.metrics.child_stopping()


class _QuietGossipRestart(logging.Filter):
    """Turns Celery's "Error on restarting Gossip" after a Redis restart into one warning line.

    When the consumer's connection dies, Celery restarts its steps; Gossip's step first closes its old
    channel, and kombu's Redis transport fails there (`ignore_errors` is handed no connection any
    more: AttributeError ... 'connection_errors'). Celery logs that as an error with a long traceback,
    but Gossip starts again on the new connection: the worker still hears the others (a test checks
    it, tests/e2e/test_broker_loss.py). Nothing is lost, so the log says so in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "Error on %s %s: %r" and args[:2] == ("restarting", "Gossip"):
            record.msg = "Gossip restarts on the new broker connection (closing its old channel failed: %r)"
            record.args = (args[2],) if len(args) > 2 else ("",)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_QUIET_GOSSIP_RESTART = _QuietGossipRestart()


class _DrainOnGroupTerm:
    """In a prefork child, a SIGTERM that arrives during a task while the main process drains the worker
    waits for the task to end, then is dropped: the main process is the one that acts on it.

    A SIGTERM to the worker's whole process group (systemd's default KillMode, `kill -- -PGID`) reaches
    the children too, and billiard's handler interrupts their tasks: each job was redelivered and used
    up a delivery. Held here, the child finishes its job and reports it; the main process stops taking
    messages, waits for the tasks running, then closes the pool, and the children leave between tasks.
    A SIGTERM between tasks (the pool being terminated) acts at once, as before.

    So does one the main process sends a child while not draining: Celery cancels the tasks running
    when its broker connection drops, since their messages go to other workers. Held, such a task ran
    to completion beside its redelivery (a quorum queue's leader stopped, tests/e2e/test_cluster.py).
    """

    _previous: Any = None
    # Set in the main process when its warm shutdown begins; shared memory made at import, before the
    # pool forks, so every child reads the main process's flag.
    _main_draining = multiprocessing.RawValue(ctypes.c_bool, False)

    @classmethod
    def install(cls, **_: Any) -> None:
        signals.task_prerun.connect(cls._hold, weak=False)
        signals.task_postrun.connect(cls._release, weak=False)

    @classmethod
    def draining(cls, **_: Any) -> None:
        """In the main process, from Celery's SIGTERM handler: the worker drains."""
        cls._main_draining.value = True

    @classmethod
    def _hold(cls, **_: Any) -> None:
        cls._previous = signal.signal(signal.SIGTERM, cls._note)

    @classmethod
    def _note(cls, signum: int, frame: Any) -> None:
        # A group's SIGTERM reaches the main process at the same moment: give its handler a moment.
        deadline = time.monotonic() + GROUP_TERM_WAIT_S
        while not cls._main_draining.value and time.monotonic() < deadline:
            time.sleep(0.01)
        if cls._main_draining.value:
            logger.info("SIGTERM during a task: the task finishes first, the worker drains")
            return
        previous = cls._previous
        cls._release()
        logger.info("SIGTERM from the worker's main process: the task is cancelled")
        if callable(previous):
            previous(signum, frame)
        else:  # SIG_DFL, as Celery sets it in a child: end the process as it would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    @classmethod
    def _release(cls, **_: Any) -> None:
        if cls._previous is not None:
            signal.signal(signal.SIGTERM, cls._previous)
            cls._previous = None


class _Prepare(bootsteps.Step):  # type: ignore[misc]  # Celery ships no type information
    """The worker's preparation, as a step of the worker's own start-up (after the Pool step has sized
    the pool, before any step creates or starts it, so before a child forks)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **options: Any) -> None:
        super().__init__(worker, **options)
        app = worker.app
        assert isinstance(app, WorkerApp)
        # Each prefork child runs inference of its own; the solo and thread pools run it in this process.
        forks = issubclass(worker.pool_cls, PreforkPool)
        app.prepare(inference_processes=int(worker.max_concurrency or worker.concurrency) if forks else 1)


def _soft_limit(limit: int) -> int:
    """A tenth below the hard limit, at least a second: time for the task to record its failure."""
    return limit - max(1, limit // 10)
