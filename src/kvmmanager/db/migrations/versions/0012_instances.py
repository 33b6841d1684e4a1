"""manager instances sharing the database, with their heartbeat

Revision ID: instances
Revises: password_change_required
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "instances"
down_revision: str | None = "password_change_required"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    with op.batch_alter_table("instances") as b:
        b.create_index(b.f("ix_instances_last_seen"), ["last_seen"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances") as b:
        b.drop_index(b.f("ix_instances_last_seen"))
    op.drop_table("instances")
