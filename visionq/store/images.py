"""The content-addressed image table: an image is stored once and deleted with the last job using it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, Delete, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from visionq.store.models import ImageRow, JobRow
from visionq.store.types import ImageIn


def insert_if_absent(conn: Connection, image: ImageIn, now: datetime) -> None:
    """Store the image unless an image with its sha256 already is; race-safe."""
    present = conn.execute(select(ImageRow.sha256).where(ImageRow.sha256 == image.sha256)).first()
    if present is not None:
        return  # don't ship the bytes again
    values = {
        "sha256": image.sha256,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "size_bytes": len(image.data),
        "data": image.data,
        "created_at": now,
    }
    # ON CONFLICT DO NOTHING: two uploads of the same new image at once both succeed.
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(ImageRow).values(values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(ImageRow).values(values).on_conflict_do_nothing())


def delete_orphans(conn: Connection, shas: Collection[str]) -> None:
    """Delete those of the images `shas` that no job references any more."""
    if not shas:
        return
    try:
        with conn.begin_nested():
            conn.execute(_delete_unreferenced(shas))
    except IntegrityError:
        # A job created concurrently (PostgreSQL) references one of them: delete the others one by one.
        for sha in shas:
            try:
                with conn.begin_nested():
                    conn.execute(_delete_unreferenced([sha]))
            except IntegrityError:
                pass


def _delete_unreferenced(shas: Collection[str]) -> Delete:
    referenced = exists().where(JobRow.image_sha256 == ImageRow.sha256)
    return delete(ImageRow).where(ImageRow.sha256.in_(shas), ~referenced)
