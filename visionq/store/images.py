"""The content-addressed image table: an image is stored once and deleted with the last job using it."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from visionq.store.tables import ImageRow, JobRow
from visionq.store.types import ImageIn

# Built once (composing a statement per call costs more CPU than running it).
_PRESENT = select(ImageRow.sha256).where(ImageRow.sha256 == bindparam("sha256"))
# ON CONFLICT DO NOTHING: two uploads of the same new image at once both succeed.
_INSERT = {
    "postgresql": postgresql.insert(ImageRow).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(ImageRow).on_conflict_do_nothing(),
}


def insert_if_absent(conn: Connection, image: ImageIn, now: datetime) -> None:
    """Store the image unless an image with its sha256 already is; race-safe."""
    present = conn.execute(_PRESENT, {"sha256": image.sha256}).first()
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
    conn.execute(_INSERT[conn.dialect.name], values)


def lock(conn: Connection, shas: Collection[str]) -> None:
    """Row-lock the images for the rest of the transaction, before their jobs are deleted.

    On PostgreSQL (READ COMMITTED) two transactions deleting the last two jobs of one image would each
    still see the other's job and keep the image, leaving it with no job. Holding the image's row lock
    serialises them, and it makes a concurrent create's foreign-key check wait for the outcome (its
    job then references a live image, or it retries on a missing one). Locks are taken in sha order
    so that two removers never deadlock. SQLite needs nothing: its write transactions are serial.
    """
    if shas and conn.dialect.name == "postgresql":
        conn.execute(
            select(ImageRow.sha256)
            .where(ImageRow.sha256.in_(shas))
            .order_by(ImageRow.sha256)
            .with_for_update()
        )


def delete_orphans(conn: Connection, shas: Collection[str]) -> None:
    """Delete those of the images `shas`, locked by `lock` beforehand, that no job references any more."""
    if shas:
        referenced = exists().where(JobRow.image_sha256 == ImageRow.sha256)
        conn.execute(delete(ImageRow).where(ImageRow.sha256.in_(shas), ~referenced))
