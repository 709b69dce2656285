"""The app Celery's command line loads: `celery -A visionq.worker.celery_app worker|beat|inspect|flower`.

The one module-level app in visionq: Celery's command line needs one to import. visionq's own commands
build theirs from the settings they loaded.
"""

from __future__ import annotations

from visionq.config import Settings
from visionq.worker.app import WorkerApp

app = WorkerApp(Settings())
