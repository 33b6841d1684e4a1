"""backups made with libvirt's backup API, and the policy fields that drive them

Revision ID: backup_records
Revises: metric_history_tiers
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "backup_records"
down_revision: str | None = "metric_history_tiers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backup_policies") as b:
        b.add_column(
            sa.Column("method", sa.String(length=16), server_default="snapshot", nullable=False)
        )
        b.add_column(sa.Column("pool", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("full_every", sa.Integer(), server_default="7", nullable=False))
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("policy_name", sa.String(length=40), nullable=False),
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("vm_name", sa.String(length=256), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("checkpoint", sa.String(length=128), nullable=True),
        sa.Column("pool", sa.String(length=64), nullable=False),
        sa.Column("volumes", sa.JSON(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("consistency", sa.JSON(), nullable=True),
        sa.Column("domain_xml", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verify_status", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["backup_policies.id"],
            name=op.f("fk_backups_policy_id_backup_policies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["backups.id"],
            name=op.f("fk_backups_parent_id_backups"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    op.create_index(op.f("ix_backups_policy_id"), "backups", ["policy_id"])
    op.create_index(op.f("ix_backups_vm_uuid"), "backups", ["vm_uuid"])
    op.create_index(op.f("ix_backups_parent_id"), "backups", ["parent_id"])
    op.create_index(op.f("ix_backups_status"), "backups", ["status"])
    op.create_index(op.f("ix_backups_created_at"), "backups", ["created_at"])


def downgrade() -> None:
    op.drop_table("backups")
    with op.batch_alter_table("backup_policies") as b:
        b.drop_column("full_every")
        b.drop_column("pool")
        b.drop_column("method")
