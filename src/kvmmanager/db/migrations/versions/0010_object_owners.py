"""owners of volumes and export bundles (libvirt keeps no metadata on volumes)

Revision ID: object_owners
Revises: backup_records
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "object_owners"
down_revision: str | None = "backup_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "object_owners",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "host", "key", name=op.f("pk_object_owners")),
    )


def downgrade() -> None:
    op.drop_table("object_owners")
