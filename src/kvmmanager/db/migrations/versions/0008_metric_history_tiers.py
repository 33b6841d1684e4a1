"""metric history in tiers (5-minute and hourly means), replacing metric_samples

Revision ID: metric_history_tiers
Revises: 0007
Create Date: 2026-11-26

The old table's primary key (host, vm_uuid, ts) cannot hold two tiers (an hour's start
is also a 5-minute bucket's), so the rows move to a new table keyed by step too. The old
5-minute rows are kept and their hours rolled up into the hourly tier.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "metric_history_tiers"
down_revision: str | None = "0007"
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
HOUR = 3600


def upgrade() -> None:
    op.create_table(
        "metric_history",
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("vm_uuid", sa.String(length=36), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in VALUE_COLUMNS),
        sa.PrimaryKeyConstraint("host", "vm_uuid", "step", "ts", name=op.f("pk_metric_history")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_history_step_ts", "metric_history", ["step", "ts"], unique=False)
    # Column names from the constants above: nothing in these statements comes from data.
    values = ", ".join(VALUE_COLUMNS)
    op.execute(
        f"INSERT INTO metric_history (host, vm_uuid, step, ts, {values}) "  # noqa: S608
        f"SELECT host, vm_uuid, step, ts, {values} FROM metric_samples"
    )
    means = ", ".join(f"avg({c})" for c in VALUE_COLUMNS)
    op.execute(
        f"INSERT INTO metric_history (host, vm_uuid, step, ts, {values}) "  # noqa: S608
        f"SELECT host, vm_uuid, {HOUR}, (ts / {HOUR}) * {HOUR}, {means} FROM metric_samples "
        f"GROUP BY host, vm_uuid, ts / {HOUR}"
    )
    with op.batch_alter_table("metric_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_samples_ts")
    op.drop_table("metric_samples")


def downgrade() -> None:
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
    values = ", ".join(VALUE_COLUMNS)
    op.execute(
        f"INSERT INTO metric_samples (host, vm_uuid, ts, step, {values}) "  # noqa: S608
        f"SELECT host, vm_uuid, ts, step, {values} FROM metric_history WHERE step = 300"
    )
    op.drop_index("ix_metric_history_step_ts", table_name="metric_history")
    op.drop_table("metric_history")
