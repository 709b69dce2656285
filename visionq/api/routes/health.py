"""Liveness (/healthz: the process answers) and readiness (/readyz: the database and broker answer)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter

from visionq.api.deps import PublisherDep, StoreDep
from visionq.api.errors import error_responses
from visionq.api.schemas import StatusOut
from visionq.errors import BrokerUnavailable, DatabaseUnavailable, ServiceUnavailable

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> StatusOut:
    """The process is alive; touches nothing, so a database outage does not get the API restarted."""
    return StatusOut()


@router.get("/readyz", responses=error_responses(503))
def readyz(store: StoreDep, publisher: PublisherDep) -> StatusOut:
    """Ready to take jobs: the database and the broker both answer (503 names the one that does not)."""
    database = _failure("database", store.ping)
    broker = _failure("broker", publisher.ping)
    if database and broker:
        raise ServiceUnavailable(f"not ready: the database ({database}) and the broker ({broker}) are down")
    if database:
        raise DatabaseUnavailable(f"not ready: the database is unavailable ({database})")
    if broker:
        raise BrokerUnavailable(f"not ready: the broker is unavailable ({broker})")
    return StatusOut()


def _failure(name: str, ping: Callable[[], None]) -> str | None:
    """None when `ping` works, else the name of what went wrong (the details go to the log only)."""
    try:
        ping()
    except Exception as exc:  # whatever the driver raises, the server is not usable
        logger.warning("readiness: %s unavailable: %s (%s)", name, exc, exc.__cause__ or "no cause")
        return type(exc.__cause__ or exc).__name__
    return None
