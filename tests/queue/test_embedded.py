"""The embedded broker: messages that appear whole or not at all, and the folder's upkeep (old event
and control files go, job messages never)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.transport.virtual import Empty

from visionq import constants
from visionq.config import Settings
from visionq.queue import create_celery_app, embedded


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Any]:
    """A channel of the embedded broker, as the app configures it."""
    app = create_celery_app(Settings(data_dir=tmp_path, broker_url=None, database_url=None))
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, embedded.Transport)
        yield conn.default_channel


def test_a_message_is_written_aside_and_renamed_into_place_whole(channel: Any, tmp_path: Path) -> None:
    folder = embedded.messages_folder(tmp_path / "broker")

    channel._put("jobs", {"body": "x" * 100_000})

    (message,) = folder.iterdir()
    assert message.name.endswith(".jobs.msg")
    assert json.loads(message.read_text()) == {"body": "x" * 100_000}
    assert channel._get("jobs") == {"body": "x" * 100_000}


def test_a_message_still_being_written_is_invisible_to_consumers(channel: Any, tmp_path: Path) -> None:
    folder = embedded.messages_folder(tmp_path / "broker")
    # What `_put` holds until its rename: the final name behind a dot, half of its bytes so far.
    (folder / ".1_0a.jobs.msg.part").write_text('{"body": "hal')

    with pytest.raises(Empty):
        channel._get("jobs")

    # What kombu's own writer exposes for an instant: the final name, nothing in it yet. A consumer
    # that takes it cannot decode it, and a Celery worker stops on that ("Unrecoverable error").
    (folder / "2_0b.jobs.msg").write_bytes(b"")
    with pytest.raises(ValueError):
        channel._get("jobs")


def test_the_app_uses_kombus_own_transport_for_every_other_broker(tmp_path: Path) -> None:
    app = create_celery_app(Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:1//"))

    assert app.conf.broker_transport is None
    conn = app.connection_for_write()
    try:
        assert conn.transport.driver_type == "amqp"  # made, not connected
    finally:
        conn.release()


def test_old_event_and_control_messages_are_pruned_but_job_messages_never(tmp_path: Path) -> None:
    folder = embedded.messages_folder(tmp_path)
    folder.mkdir(parents=True)
    old = time.time() - embedded.STALE_MESSAGE_AGE_S - 60
    files = {
        "old_event": folder / "1_a.celeryev.4947eb23.msg",
        "old_control": folder / "2_b.gone@host.celery.pidbox.msg",
        "old_job": folder / f"3_c.{constants.QUEUE}.msg",
        "fresh_event": folder / "4_d.celeryev.4947eb23.msg",
        "old_half_written_job": folder / f".5_e.{constants.QUEUE}.msg.part",
    }
    for name, path in files.items():
        path.write_text("{}")
        if name.startswith("old"):
            os.utime(path, (old, old))

    assert embedded.prune_stale_messages(tmp_path) == 3

    assert sorted(p.name for p in folder.iterdir()) == sorted(
        files[name].name for name in ("old_job", "fresh_event")
    )
