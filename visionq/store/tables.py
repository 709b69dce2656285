"""The two tables: content-addressed images and the jobs that run on them (the one source of job state)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from visionq.store.status import JobStatus

# Named constraints keep the migrations deterministic and let Alembic's SQLite batch mode recreate tables.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUS_CHECK = "status IN ({})".format(", ".join(f"'{s.value}'" for s in JobStatus))


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in aware and comes out aware in UTC, also on SQLite (which keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: visionq stores only timezone-aware datetimes")
        value = value.astimezone(UTC)
        # SQLite stores the wall-clock text only; all of it in UTC keeps comparisons and ordering right.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# `none_as_null`: a Python None is SQL NULL, not the JSON text 'null'.
_JSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ImageRow(Base):
    """An uploaded image, stored once per content hash; its bytes live here so workers need only DB+broker."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(100))
    width: Mapped[int]
    height: Mapped[int]
    size_bytes: Mapped[int]
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JobRow(Base):
    """One detection request and, once run, its result."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(STATUS_CHECK, name="status"),
        # Newest-first keyset pagination, unfiltered and by status.
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_created_at_id", "status", "created_at", "id"),
        # Purge finds old finished jobs; deleting an image looks for jobs still referencing it.
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_image_sha256", "image_sha256"),
        # A submit's Idempotency-Key names one job at most (migration 0004).
        Index("uq_jobs_idempotency_key", "idempotency_key", unique=True),
        # The reconciler looks for pending webhooks whose next try is long overdue (migration 0006).
        Index("ix_jobs_webhook_next_at", "webhook_next_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(_JSON)
    image_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("images.sha256"))
    detections: Mapped[list[dict[str, Any]] | None] = mapped_column(_JSON)
    timings_ms: Mapped[dict[str, float] | None] = mapped_column(_JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The client's key name, '/', then its Idempotency-Key (1-255 characters): 64 + 1 + 255.
    idempotency_key: Mapped[str | None] = mapped_column(String(320))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The API key's name that submitted the job (migration 0005); null without API keys.
    client: Mapped[str | None] = mapped_column(String(64))
    # Where the finished job is POSTed (migration 0006), and how that went: `webhook_status` is pending
    # until a 2xx answer (delivered) or the last try (failed); null without a callback_url.
    callback_url: Mapped[str | None] = mapped_column(Text)
    webhook_status: Mapped[str | None] = mapped_column(String(16))
    webhook_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    webhook_error: Mapped[str | None] = mapped_column(Text)
    webhook_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the next try is due while pending: the reconciler sends one found long overdue again.
    webhook_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
