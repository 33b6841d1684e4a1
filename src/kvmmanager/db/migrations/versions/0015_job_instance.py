"""the instance that runs a job: another instance starting fails only jobs whose instance
is gone

Revision ID: job_instance
Revises: audit_reason
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "job_instance"
down_revision: str | None = "audit_reason"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("instance_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.drop_column("instance_id")
