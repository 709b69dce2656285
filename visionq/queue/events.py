"""Finished jobs announced on the broker, for deployments whose database cannot push (SQLite).

On PostgreSQL the database itself announces every status change as it commits (visionq.store.events);
elsewhere the worker publishes `{"id", "status"}` to the fanout exchange `visionq.jobs` once a job's
outcome is stored (`announce`), and each API process consumes them on a queue of its own
(`BrokerJobEvents`). The messages are transient and best effort: a waiter that misses one still reads
its job when its own deadline comes, and one that reconnected reads them all again (`on_gap`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Final

from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer

logger = logging.getLogger(__name__)

EXCHANGE: Final = "visionq.jobs"

# A listener queue nobody consumes (its API process died) is dropped by RabbitMQ after this.
_QUEUE_EXPIRES_S: Final = 60
# An announcement nobody read within this is worthless: its waiter has timed out or read the row.
_MESSAGE_TTL_S: Final = 60
_PUBLISH_TIMEOUT_S: Final = 2.0
_WAIT_S: Final = 1.0
_FIRST_DRAIN_S: Final = 0.05
_RETRY_FIRST_S: Final = 0.2
_RETRY_MAX_S: Final = 5.0

OnChange = Callable[[str, str], None]
OnGap = Callable[[], None]


_EXCHANGE: Final = Exchange(  # type: ignore[no-untyped-call]
    EXCHANGE, type="fanout", durable=False, auto_delete=False, delivery_mode="transient"
)


def announce(app: Celery, job_id: str, status: str) -> None:
    """Tell every listening API process that job `job_id` is now `status`; a broker error is logged only
    (the outcome is stored already, and waiters read it by their deadline anyway)."""
    try:
        with app.producer_pool.acquire(block=True, timeout=_PUBLISH_TIMEOUT_S) as producer:
            producer.publish(
                {"id": job_id, "status": status},
                exchange=_EXCHANGE,
                routing_key="",
                serializer="json",
                declare=[_EXCHANGE],
                retry=False,
                timeout=_PUBLISH_TIMEOUT_S,
            )
    except Exception as exc:  # noqa: BLE001 - whatever the transport raises, the job is done
        logger.warning("could not announce job %s as %s on the broker: %s", job_id, status, exc)


class BrokerJobEvents:
    """Consumes the announcements on a queue of this process's own, in a daemon thread."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def start(self, on_change: OnChange, on_gap: OnGap) -> None:
        """Start listening; the callbacks run in the listener's thread and must not block."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, args=(on_change, on_gap), name="visionq-broker-listen", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and delete this process's queue (returns within a few seconds)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=_WAIT_S + 5)

    def _run(self, on_change: OnChange, on_gap: OnGap) -> None:
        def handle(body: Any, message: Message) -> None:
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                on_change(body["id"], str(body.get("status", "")))

        delay = _RETRY_FIRST_S
        while not self._stopping.is_set():
            # A fresh queue per connection: RabbitMQ deletes an exclusive one with its connection.
            queue = Queue(  # type: ignore[no-untyped-call]
                f"{EXCHANGE}.{uuid.uuid4().hex}",
                _EXCHANGE,
                routing_key="",
                durable=False,
                exclusive=True,
                auto_delete=True,
                expires=_QUEUE_EXPIRES_S,
                message_ttl=_MESSAGE_TTL_S,
            )
            conn = self._app.connection_for_read()
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=_PUBLISH_TIMEOUT_S)
                with Consumer(  # type: ignore[no-untyped-call]
                    conn, [queue], callbacks=[handle], accept=["json"], no_ack=True
                ):
                    # Redis subscribes to the fanout only once events are drained: one short drain
                    # first, so that `listening` means announcements are heard from now on.
                    try:
                        conn.drain_events(timeout=_FIRST_DRAIN_S)
                    except TimeoutError:
                        pass
                    self.listening.set()
                    delay = _RETRY_FIRST_S
                    on_gap()  # whatever finished before the queue was bound went unheard
                    while not self._stopping.is_set():
                        try:
                            conn.drain_events(timeout=_WAIT_S)
                        except TimeoutError:
                            continue
                _delete(queue, conn)
            except Exception as exc:  # noqa: BLE001 - every transport raises its own errors
                self.listening.clear()
                if self._stopping.is_set():
                    break
                logger.warning("listening for finished jobs failed (%s); again in %.1f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            finally:
                conn.release()
        self.listening.clear()


def _delete(queue: Queue, conn: Any) -> None:
    """Unbind and delete the queue: kombu's filesystem transport would otherwise keep filling it."""
    try:
        queue.bind(conn.default_channel).delete()  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - best effort on the way out
        logger.info("could not delete the listener queue %s: %s", queue.name, exc)
