"""The message layer both sides share: the Celery app's wire format, the publisher, the embedded broker.

The API publishes with it and imports nothing of the worker; the worker builds its own app on top of it
(`visionq.worker.app.WorkerApp`).
"""

from __future__ import annotations

from visionq.queue.app import create_celery_app
from visionq.queue.publish import JobPublisher, publishing_app

__all__ = ["JobPublisher", "create_celery_app", "publishing_app"]
