"""metric samples (downsampled VM metric history)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VALUE_COLUMNS = (
    "cpu_pct",
    "mem_bytes",
    "disk_rd_bps",
    "disk_wr_bps",
    "disk_rd_iops",
    "disk_wr_iops",
    "net_rx_bps",
    "net_tx_bps",
)


def upgrade() -> None:
    op.create_table(
        "metric_samples",
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in VALUE_COLUMNS),
        sa.PrimaryKeyConstraint("host", "vm_uuid", "ts", name=op.f("pk_metric_samples")),
    )
    with op.batch_alter_table("metric_samples", schema=None) as batch_op:
        batch_op.create_index("ix_metric_samples_ts", ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("metric_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_samples_ts")
    op.drop_table("metric_samples")
