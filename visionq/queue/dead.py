"""The dead-letter queue's reader: what workers parked there, and why (`visionq dead-letters`).

Workers park a message they cannot run (`visionq.worker.consumer`) with the reason in a header. None of
them holds a job: a message that names a job but cannot run never claimed it, and the job's row is
published again by beat's reconciliation. So they wait here for a person, who lists them (the bodies
are never shown: they may hold anything) and purges them once understood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.entity import Queue

from visionq import constants

REFUSED_HEADER = "x-visionq-refused"

# Where workers park what they cannot run (worker/consumer.py publishes to it, DeadLetters reads it).
DEAD_LETTERS = Queue(constants.DEAD_LETTER_QUEUE, durable=True)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked message, described (never its body)."""

    reason: str
    task: str | None
    content_type: str | None
    size_bytes: int


class DeadLetters:
    """The dead-letter queue of the app's broker."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def peek(self, *, limit: int = 100) -> tuple[int, list[DeadLetter]]:
        """How many messages are parked, and the first `limit` of them; they all stay parked (taken
        unacknowledged, then handed back as the channel closes)."""
        with self._app.connection_for_write() as conn:
            channel = conn.channel()
            try:
                queue = _queue(channel)
                count = int(queue.queue_declare().message_count)
                found: list[DeadLetter] = []
                while len(found) < min(limit, count) and (message := queue.get(no_ack=False)) is not None:
                    found.append(_describe(message))
            finally:
                channel.close()  # unacknowledged: every message goes back, in its order
        return count, found

    def purge(self) -> int:
        """Delete every parked message; how many there were."""
        with self._app.connection_for_write() as conn:
            return int(_queue(conn.default_channel).purge() or 0)


def _queue(channel: Any) -> Any:
    queue = DEAD_LETTERS.bind(channel)  # type: ignore[no-untyped-call]
    queue.declare()  # as the workers declare it
    return queue


def _describe(message: Any) -> DeadLetter:
    headers = message.headers or {}
    body = message.body.encode() if isinstance(message.body, str) else message.body or b""
    return DeadLetter(
        reason=str(headers.get(REFUSED_HEADER, "no reason recorded")),
        task=str(headers["task"]) if isinstance(headers.get("task"), str) else None,
        content_type=message.content_type,
        size_bytes=len(body),
    )
