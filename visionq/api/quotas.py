"""Bounds on the queue: how many jobs wait in all, and per API key, before submits are refused.

Counting the job table on every submit would cost a query per job; `QueueBounds` counts at most once
a second (`constants.QUEUE_COUNT_MAX_AGE_S`) and adds the jobs this process queued since. Other API
processes' submits of that second are seen at the next count, so a bound may be passed by at most one
second of their submits, never grow without end.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from visionq import constants
from visionq.api.errors import RETRY_AFTER_S
from visionq.errors import ErrorCode, QueueFull, Throttled
from visionq.store import JobStore


class QueueBounds:
    """`admit` a submit against the bounds (None: no bound), then `queued` once it is queued."""

    def __init__(
        self,
        store: JobStore,
        *,
        total: int | None,
        per_client: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._total = total
        self._per_client = per_client
        self._clock = clock
        self._lock = threading.Lock()
        self._counted_at: float | None = None
        self._queued: Counter[str | None] = Counter()

    def admit(self, client: str | None) -> None:
        """Raise QueueFull (503) or Throttled (429 `too_many_queued`) when the queue holds enough."""
        if self._total is None and (self._per_client is None or client is None):
            return
        queued = self._counts()
        if self._total is not None and queued.total() >= self._total:
            raise QueueFull(
                f"{self._total:,} jobs are queued, as many as this service takes; submit again later."
            )
        if self._per_client is not None and client is not None and queued[client] >= self._per_client:
            raise Throttled(
                f"This API key has {self._per_client:,} jobs queued, its limit; submit more once they run.",
                retry_after_s=RETRY_AFTER_S,
                code=ErrorCode.TOO_MANY_QUEUED,
            )

    def queued(self, client: str | None) -> None:
        """Count a job this process just queued, until the next count sees it."""
        with self._lock:
            self._queued[client] += 1

    def _counts(self) -> Counter[str | None]:
        with self._lock:
            now = self._clock()
            fresh = self._counted_at is not None and now - self._counted_at < constants.QUEUE_COUNT_MAX_AGE_S
            if not fresh:
                self._queued = Counter(self._store.queued_by_client())
                self._counted_at = now
            return Counter(self._queued)
