"""The embedded broker's folder upkeep: old event and control files go, job messages never."""

from __future__ import annotations

import os
import time
from pathlib import Path

from visionq import constants
from visionq.queue import embedded


def test_old_event_and_control_messages_are_pruned_but_job_messages_never(tmp_path: Path) -> None:
    folder = embedded.messages_folder(tmp_path)
    folder.mkdir(parents=True)
    old = time.time() - embedded.STALE_MESSAGE_AGE_S - 60
    files = {
        "old_event": folder / "1_a.celeryev.4947eb23.msg",
        "old_control": folder / "2_b.gone@host.celery.pidbox.msg",
        "old_job": folder / f"3_c.{constants.QUEUE}.msg",
        "fresh_event": folder / "4_d.celeryev.4947eb23.msg",
    }
    for name, path in files.items():
        path.write_text("{}")
        if name.startswith("old"):
            os.utime(path, (old, old))

    assert embedded.prune_stale_messages(tmp_path) == 2

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        files[name].name for name in ("old_job", "fresh_event")
    )
