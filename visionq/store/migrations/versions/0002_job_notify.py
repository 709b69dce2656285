"""PostgreSQL: every change of a job's status is announced on the `visionq_jobs` channel.

The trigger sends `<job id> <new status>` with NOTIFY, which PostgreSQL delivers to listeners when the
transaction commits and never for one that rolls back: a waiting request is woken exactly when the
row it will read is there, and the worker pays no extra round trip for it. SQLite has no NOTIFY: there
the worker announces finished jobs on the broker instead (visionq.queue.events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a migration must keep meaning what it meant when written.
_CHANNEL = "visionq_jobs"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION visionq_job_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{_CHANNEL}', NEW.id || ' ' || NEW.status);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_status_changed
        AFTER UPDATE OF status ON jobs
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION visionq_job_status_changed()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER jobs_status_changed ON jobs")
    op.execute("DROP FUNCTION visionq_job_status_changed()")
