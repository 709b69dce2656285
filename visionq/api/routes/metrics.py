"""GET /metrics: the API's Prometheus metrics (visionq.observe.metrics) for operators' scrapers, kept out
of the OpenAPI schema. With API keys on it needs one too, unless VISIONQ_METRICS_PUBLIC (access.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from visionq.api.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    """The Prometheus text format. A plain `def`: counting the queue reads the database (the threadpool)."""
    return Response(generate_latest(services.metrics.served), media_type=CONTENT_TYPE_LATEST)
