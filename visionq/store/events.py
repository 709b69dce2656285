"""Job status changes as they commit, pushed by PostgreSQL (LISTEN/NOTIFY) to whoever waits for them.

A trigger (migration 0002) notifies `visionq_jobs` with `<job id> <status>` on every status change.
`PostgresJobEvents` holds one connection that listens, in a thread of its own, and calls `on_change`
for each notification. Notifications sent while it was not listening are lost, so each time it
(re)connects it calls `on_gap`: whoever waits must then read the rows again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import URL

from visionq.store.db import PG_TCP_OPTIONS

logger = logging.getLogger(__name__)

CHANNEL: Final = "visionq_jobs"

# How long one wait for notifications lasts: the longest `stop` waits for the thread to notice it.
_WAIT_S: Final = 1.0
# Reconnecting after the database went away: from this, doubling, to at most the cap.
_RETRY_FIRST_S: Final = 0.2
_RETRY_MAX_S: Final = 5.0
_CONNECT_TIMEOUT_S: Final = 5

OnChange = Callable[[str, str], None]  # job id, new status
OnGap = Callable[[], None]


class PostgresJobEvents:
    """Listens on `visionq_jobs` in a daemon thread from `start` until `stop`."""

    def __init__(self, url: URL) -> None:
        # psycopg's own connection string: SQLAlchemy's URL without its "+psycopg" driver part.
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while LISTEN is in force

    def start(self, on_change: OnChange, on_gap: OnGap) -> None:
        """Start listening; the callbacks run in the listener's thread and must not block."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, args=(on_change, on_gap), name="visionq-pg-listen", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection (returns within about a second)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=_WAIT_S + _CONNECT_TIMEOUT_S)

    def _conninfo_with_timeouts(self) -> str:
        """The connection string with the engine's TCP timeouts (`db.PG_TCP_OPTIONS`): a partition must
        end in an error and a reconnect, not a LISTEN that hears nothing for ever. The URL's own win."""
        given = conninfo_to_dict(self._conninfo)
        defaults = {"connect_timeout": _CONNECT_TIMEOUT_S, **PG_TCP_OPTIONS}
        return make_conninfo(self._conninfo, **{k: v for k, v in defaults.items() if k not in given})

    def _run(self, on_change: OnChange, on_gap: OnGap) -> None:
        delay = _RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo_with_timeouts(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = _RETRY_FIRST_S
                    on_gap()  # whatever changed before LISTEN took effect went unheard
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=_WAIT_S):
                            job_id, _, status = note.payload.partition(" ")
                            on_change(job_id, status)
            except psycopg.Error as exc:
                self.listening.clear()
                if self._stopping.is_set():
                    break
                logger.warning("listening for job changes failed (%s); again in %.1f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        self.listening.clear()
