"""The embedded broker: kombu's filesystem transport in folders under the data dir, for one machine.

One message is one file in `messages/`, named `<ms>_<uuid>.<queue>.msg`; consumers poll the folder.
Exchange → queue bindings are files in `control/`, which is what fanout (inspect, control, Flower's
events) needs. kombu never removes the binding of a consumer that went away (a killed Flower, a
stopped worker's control queue), so every event and broadcast keeps adding files for it that nobody
reads: `prune_stale_messages` deletes those once they are old.

kombu's own writer creates a message file and then fills it, while a consumer may take (rename and
read) it in between, find it empty and stop with "Unrecoverable error: JSONDecodeError" (kombu#1551,
open; seen here killing `visionq up`'s worker under Flower's inspect broadcasts). `Transport` writes
each message under a name no consumer reads and renames it into place whole.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Final

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from visionq import constants

# What Celery is told to use for the embedded broker (`broker_transport`), instead of kombu's own.
TRANSPORT: Final = "visionq.queue.embedded:Transport"

# A message being written: a leading dot, so consumers (which read `<ms>_<uuid>.<queue>.msg`) skip it.
_STAGING_SUFFIX: Final = ".part"

# An idle consumer lists the folder this often. Every wait for a message costs up to one interval: at
# 0.1 s a worker child waited ~50 ms between jobs and `bench service` ran at half the RabbitMQ rate;
# at 0.02 s an idle consumer lists a small folder 50 times a second (microseconds each).
POLL_INTERVAL_S = 0.02

# Events and control messages are worthless after seconds (RabbitMQ gives events a 5 s TTL, control
# replies expire with their request); one ten minutes old has no live reader and never will.
STALE_MESSAGE_AGE_S = 600.0


def messages_folder(broker_dir: Path) -> Path:
    return broker_dir / "messages"


def transport_options(broker_dir: Path) -> dict[str, Any]:
    """The filesystem transport's options, its folders created."""
    messages, control, processed = (
        messages_folder(broker_dir),
        broker_dir / "control",
        broker_dir / "processed",
    )
    for folder in (messages, control, processed):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        # One folder for both: producers write where consumers read.
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "control_folder": str(control),
        # A consumed message is deleted, not kept: the job table is the record.
        "store_processed": False,
        "processed_folder": str(processed),
        "polling_interval": POLL_INTERVAL_S,
    }


class Channel(filesystem.Channel):
    """kombu's filesystem channel, whose messages appear whole or not at all."""

    # kombu's own filesystem Channel already names the abstract channel's `message` `payload`.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu's own name (consumers take the files in name order: oldest first), written aside.
        name = f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        staging = final.with_name(f".{name}{_STAGING_SUFFIX}")
        try:
            staging.write_bytes(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(staging, final)  # atomic within the folder
        except OSError as exc:
            staging.unlink(missing_ok=True)
            raise ChannelError(f"Cannot add file {str(final)!r} to directory") from exc


class Transport(filesystem.Transport):
    """kombu's filesystem transport on `Channel`."""

    Channel = Channel


def prune_stale_messages(broker_dir: Path, *, older_than_s: float = STALE_MESSAGE_AGE_S) -> int:
    """Delete event and control messages older than `older_than_s`, and messages a writer that died
    left half-written; job and webhook messages are never touched. Returns how many files were deleted.
    """
    folder = messages_folder(broker_dir)
    if not folder.is_dir():
        return 0
    kept = {f"{constants.QUEUE}.msg", f"{constants.WEBHOOK_QUEUE}.msg"}  # jobs and webhooks
    cutoff = time.time() - older_than_s
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            # A half-written message was never published: its publisher got an error (and the API
            # discarded its job); it is never renamed into place.
            half_written = entry.name.endswith(_STAGING_SUFFIX)
            if not half_written and (not entry.name.endswith(".msg") or entry.name.partition(".")[2] in kept):
                continue
            try:
                if entry.stat().st_mtime < cutoff:
                    os.remove(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # consumed meanwhile
    return removed
