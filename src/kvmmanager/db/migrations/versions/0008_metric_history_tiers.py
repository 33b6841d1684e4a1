"""metric history in tiers (5-minute and hourly means), replacing metric_samples

Revision ID: metric_history_tiers
Revises: 0007
Create Date: 2026-11-26

The old table's primary key (host, vm_uuid, ts) cannot hold two tiers (an hour's start
is also a 5-minute bucket's), so the rows move to a new table keyed by step too, with
the UUID as its 16 bytes. The old 5-minute rows (at most a day of them) are kept and
their hours rolled up into the hourly tier.
"""

import uuid
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import context, op

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
BATCH = 5000


def _table(name: str, uuid_type: sa.types.TypeEngine) -> sa.Table:
    return sa.table(
        name,
        sa.column("host", sa.String()),
        sa.column("vm_uuid", uuid_type),
        sa.column("step", sa.Integer()),
        sa.column("ts", sa.BigInteger()),
        *(sa.column(c, sa.Float()) for c in VALUE_COLUMNS),
    )


def _batches(bind: sa.Connection, table: sa.Table, where: sa.ColumnElement) -> Iterator[list]:
    """The rows of `table` in key order, BATCH at a time (keyset pagination: no cursor
    stays open while the caller writes, and memory stays bounded)."""
    key = (table.c.host, table.c.vm_uuid, table.c.ts)
    after = None
    while True:
        query = sa.select(table).where(where).order_by(*key).limit(BATCH)
        if after is not None:
            query = query.where(sa.tuple_(*key) > sa.tuple_(*after))
        batch = [dict(r) for r in bind.execute(query).mappings()]
        if not batch:
            return
        yield batch
        last = batch[-1]
        after = (last["host"], last["vm_uuid"], last["ts"])


def upgrade() -> None:
    op.create_table(
        "metric_history",
        sa.Column("host", sa.String(length=63), nullable=False),
        sa.Column("vm_uuid", sa.LargeBinary(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in VALUE_COLUMNS),
        sa.PrimaryKeyConstraint("host", "vm_uuid", "step", "ts", name=op.f("pk_metric_history")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_history_step_ts", "metric_history", ["step", "ts"], unique=False)
    old = _table("metric_samples", sa.String())
    new = _table("metric_history", sa.LargeBinary())
    if context.is_offline_mode():
        # A SQL script (`alembic upgrade --sql`): the conversion in the server's own SQL.
        hexed = sa.func.replace(old.c.vm_uuid, "-", "")
        if op.get_context().dialect.name == "postgresql":
            key = sa.func.decode(hexed, "hex")
        else:
            key = sa.func.unhex(hexed)  # SQLite 3.41+
        op.execute(
            sa.insert(new).from_select(
                ["host", "vm_uuid", "step", "ts", *VALUE_COLUMNS],
                sa.select(
                    old.c.host, key, old.c.step, old.c.ts, *(old.c[c] for c in VALUE_COLUMNS)
                ),
            )
        )
    else:
        bind = op.get_bind()
        for batch in _batches(bind, old, old.c.step > 0):
            out = []
            for r in batch:
                try:
                    key = uuid.UUID(r["vm_uuid"]).bytes
                except ValueError:
                    continue  # not a libvirt UUID: nothing could ever read it back
                out.append({**r, "vm_uuid": key})
            if out:
                bind.execute(sa.insert(new), out)
    hour = new.c.ts // HOUR * HOUR
    means = [sa.func.avg(new.c[c]).label(c) for c in VALUE_COLUMNS]
    op.execute(
        sa.insert(new).from_select(
            ["host", "vm_uuid", "step", "ts", *VALUE_COLUMNS],
            sa.select(new.c.host, new.c.vm_uuid, sa.literal(HOUR), hour, *means)
            .where(new.c.step == 300)
            .group_by(new.c.host, new.c.vm_uuid, hour),
        )
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
    old = _table("metric_samples", sa.String())
    new = _table("metric_history", sa.LargeBinary())
    if context.is_offline_mode():
        raise NotImplementedError("downgrading metric_history needs a database connection")
    bind = op.get_bind()
    for batch in _batches(bind, new, new.c.step == 300):
        out = [{**r, "vm_uuid": str(uuid.UUID(bytes=r["vm_uuid"]))} for r in batch]
        bind.execute(sa.insert(old), out)
    op.drop_index("ix_metric_history_step_ts", table_name="metric_history")
    op.drop_table("metric_history")
