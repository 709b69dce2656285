"""Webhooks: a job may name a callback URL, and records how its delivery went.

`webhook_status` is null without a callback, pending until the receiver answered 2xx (delivered) or
the last try failed (failed); `webhook_attempts`, `webhook_error` and `webhook_at` describe the latest
try, `webhook_next_at` when the next is due (indexed: the reconciler finds overdue ones).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("webhook_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("webhook_next_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_webhook_next_at", ["webhook_next_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_webhook_next_at")
        for column in (
            "webhook_next_at",
            "webhook_at",
            "webhook_error",
            "webhook_attempts",
            "webhook_status",
            "callback_url",
        ):
            batch.drop_column(column)
