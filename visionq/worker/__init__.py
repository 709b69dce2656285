"""The Celery side: the app factory, the publisher the API uses, and the tasks workers run."""

from __future__ import annotations

from visionq.worker.app import create_celery_app
from visionq.worker.publish import JobPublisher

__all__ = ["JobPublisher", "create_celery_app"]
