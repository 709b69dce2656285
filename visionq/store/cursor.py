"""The opaque, URL-safe page cursor of `JobStore.page`: the (created_at, id) of a page's last job."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from visionq.errors import InvalidRequest
from visionq.store.types import canonical_job_id


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """The opaque, URL-safe cursor pointing just after the job (created_at, job_id)."""
    raw = f"{created_at.astimezone(UTC).isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, job id) from a cursor; InvalidRequest when it is not one encode_cursor made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, job_id = raw.split("|")
        created_at = datetime.fromisoformat(created_text)
        key = canonical_job_id(job_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"malformed cursor {cursor!r}") from exc
    if key is None or created_at.utcoffset() is None:
        raise InvalidRequest(f"malformed cursor {cursor!r}")
    return created_at, key
