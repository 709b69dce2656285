"""The worker's consumer: Celery's, except for what it does with a message it cannot run.

Celery logs such a message whole (its raw body, however big) with a traceback, then acks it: gone. Here
it gets one log line (what was wrong, its size and content type, never its body) and is moved to the
dead-letter queue (`constants.DEAD_LETTER_QUEUE`) with the reason in a header. A pickle message is
never unpickled: only JSON is accepted, so it arrives here as a decode error.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from visionq.queue.app import PUBLISH_RETRY_POLICY
from visionq.queue.dead import DEAD_LETTERS, REFUSED_HEADER

logger = logging.getLogger(__name__)

# How much of an error's text a log line keeps (a decoder's message can quote the body).
_REASON_CHARS = 200


class Consumer(CeleryConsumer):  # type: ignore[misc]  # Celery ships no type information
    """Celery's consumer, dead-lettering the messages it cannot decode or run, and without Celery's
    native delayed delivery step (`Blueprint`)."""

    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc]
        """Celery's consumer steps but native delayed delivery.

        With a quorum queue, that step declares 28 quorum queues and exchanges (celery_delayed_0..27) on
        every connect, to each broker URL in turn, and retries one that is down for 9 s: a worker whose
        cluster node stopped took no job for 16 s after it had reconnected to another (1 s without it).
        It can only route retries bound for topic or fanout exchanges, and visionq's is direct (Celery
        says so at start): a task's retry waits in the worker until its countdown is over, on either
        queue type.
        """

        default_steps = [
            step
            for step in CeleryConsumer.Blueprint.default_steps
            if step != "celery.worker.consumer.delayed_delivery:DelayedDelivery"
        ]

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        self._dead_letter(message, "cannot be decoded", exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "is not a task message", None)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        self._dead_letter(message, "names a task this worker does not have", exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        self._dead_letter(message, "is a malformed task request", exc)

    def _dead_letter(self, message: Any, what: str, exc: BaseException | None) -> None:
        reason = f"{what}: {type(exc).__name__}: {exc}" if exc is not None else what
        reason = reason[:_REASON_CHARS]
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        try:
            self._publish_dead(message, body, reason)
        except Exception as error:  # the broker failing too: put it back, lose nothing
            logger.error(
                "a message that %s could not be moved to %s (%s): requeued", what, DEAD_LETTERS.name, error
            )
            message.reject_log_error(logger, self.connection_errors, requeue=True)
            return
        logger.error(
            "refused a message that %s (%d bytes, content type %r): moved to %s",
            reason,
            len(body),
            message.content_type,
            DEAD_LETTERS.name,
        )
        message.ack()

    def _publish_dead(self, message: Any, body: bytes, reason: str) -> None:
        headers = {k: v for k, v in (message.headers or {}).items() if isinstance(k, str)}
        headers[REFUSED_HEADER] = reason
        with self.app.producer_pool.acquire(block=True, timeout=5) as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=DEAD_LETTERS.name,
                declare=[DEAD_LETTERS],
                headers=headers,
                content_type=message.content_type or "application/octet-stream",
                content_encoding=message.content_encoding or "binary",
                delivery_mode=2,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
            )
