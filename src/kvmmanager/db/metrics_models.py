"""Persisted metric history in tiers: one row per VM per bucket, where `step` names the
tier (300 = 5-minute means kept 24 h, 3600 = hourly means kept `metrics.retention_days`).
Imported by `kvmmanager.db.models` so it is part of the one metadata."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from kvmmanager.db.base import Base


class MetricSample(Base):
    __tablename__ = "metric_history"

    # Primary key in reading order: one VM's series of one tier is a single range scan.
    host: Mapped[str] = mapped_column(String(63), primary_key=True)
    # The UUID's 16 bytes (not its 36 characters): the key is in both b-trees of a
    # million-row table at 1,000 VMs (docs/performance.md, "Metric history").
    vm_uuid: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Bucket start, Unix seconds (a multiple of `step`).
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Means over the bucket; NULL when the VM had no value for it (e.g. just started).
    # Byte figures are stored as whole numbers: SQLite then keeps them in 1-6 bytes.
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    mem_bytes: Mapped[float | None] = mapped_column(Float)
    disk_rd_bps: Mapped[float | None] = mapped_column(Float)
    disk_wr_bps: Mapped[float | None] = mapped_column(Float)
    disk_rd_iops: Mapped[float | None] = mapped_column(Float)
    disk_wr_iops: Mapped[float | None] = mapped_column(Float)
    net_rx_bps: Mapped[float | None] = mapped_column(Float)
    net_tx_bps: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # Pruning, the hourly roll-up and the start-up load scan one tier by time.
        Index("ix_metric_history_step_ts", "step", "ts"),
        # SQLite: the rows live in the primary key's b-tree (no rowid copy of the key).
        {"sqlite_with_rowid": False},
    )
