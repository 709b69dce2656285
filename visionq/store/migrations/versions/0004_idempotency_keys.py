"""Idempotent submits: a job remembers the Idempotency-Key it was submitted with, and what was asked.

`idempotency_key` is unique: a second submit with the key finds the first job instead of making one,
however the two requests race. `request_fingerprint` (sha256 of the image's sha256, the model and the
parameters) tells a retry of the same request from another request that reuses the key. Both are null
for a job submitted without a key. A key lives as long as its job (at least the retention period).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_fingerprint", sa.String(64), nullable=True))
    op.create_index("uq_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_jobs_idempotency_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_fingerprint")
        batch.drop_column("idempotency_key")
