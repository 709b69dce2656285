"""The app Celery's command line loads: `celery -A visionq.worker.celery_app worker|beat|inspect|flower`.

The one module-level app in visionq: the CLI needs one to import. Everything else builds its own with
`create_celery_app(settings)`.
"""

from __future__ import annotations

from visionq.config import Settings
from visionq.worker.app import create_celery_app

app = create_celery_app(Settings())
