"""API keys: a job remembers which key submitted it, and Idempotency-Keys become each key's own.

`client` is the name of the API key a job was submitted with (null without API keys); the API bounds
the queued jobs per key with it. `idempotency_key` now holds `client/key` for a keyed submit, so two
clients never meet through a key: it widens from 255 to 320 characters (64 + 1 + 255).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("client", sa.String(64), nullable=True))
        batch.alter_column(
            "idempotency_key", existing_type=sa.String(255), type_=sa.String(320), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column(
            "idempotency_key", existing_type=sa.String(320), type_=sa.String(255), existing_nullable=True
        )
        batch.drop_column("client")
