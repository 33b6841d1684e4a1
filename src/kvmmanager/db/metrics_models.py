"""Downsampled metric history (one row per VM per 5-minute bucket), so graphs survive a
restart. Imported by `kvmmanager.db.models` so it is part of the one metadata."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from kvmmanager.db.base import Base


class MetricSample(Base):
    __tablename__ = "metric_samples"

    host: Mapped[str] = mapped_column(String(63), primary_key=True)
    vm_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Bucket start, Unix seconds (a multiple of `step`).
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    # Means over the bucket; NULL when the VM had no value for it (e.g. just started).
    cpu_pct: Mapped[float | None] = mapped_column(Float)
    mem_bytes: Mapped[float | None] = mapped_column(Float)
    disk_rd_bps: Mapped[float | None] = mapped_column(Float)
    disk_wr_bps: Mapped[float | None] = mapped_column(Float)
    disk_rd_iops: Mapped[float | None] = mapped_column(Float)
    disk_wr_iops: Mapped[float | None] = mapped_column(Float)
    net_rx_bps: Mapped[float | None] = mapped_column(Float)
    net_tx_bps: Mapped[float | None] = mapped_column(Float)

    # Pruning and the start-up load scan by time across all VMs.
    __table_args__ = (Index("ix_metric_samples_ts", "ts"),)
