"""REST shapes of VM metrics: current values, collector state, history series.

Rates: `cpu_pct` is percent of one host CPU (two busy vCPUs read 200), byte rates are
bytes per second, IOPS requests per second, `mem_bytes` the memory in use (the guest's own
figure when the balloon driver reports it, else the QEMU process's RSS; `mem_source` says
which). `null` means not known at this collection (first sample after a start, a counter
reset, an inactive VM).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class CollectorOut(BaseModel):
    host: str
    cycles: int = Field(description="collections done since the manager started")
    overruns: int = Field(description="ticks skipped because the previous one still ran")
    errors: int
    last_error: str
    last_duration_seconds: float
    last_cpu_seconds: float = Field(description="CPU time of the last collection's thread")
    last_call_seconds: float = Field(description="wall time of the getAllDomainStats call")
    vms: int
    last_ts: float | None


class VmRates(BaseModel):
    uuid: str
    name: str
    state: str
    cpu_pct: float | None
    mem_bytes: float | None
    disk_rd_bps: float | None
    disk_wr_bps: float | None
    disk_rd_iops: float | None
    disk_wr_iops: float | None
    net_rx_bps: float | None
    net_tx_bps: float | None


class HostMetricsOut(BaseModel):
    host: str
    ts: float | None
    collector: CollectorOut
    vms: list[VmRates]


class Totals(BaseModel):
    cpu_seconds: float | None
    disk_rd_bytes: int
    disk_wr_bytes: int
    disk_rd_reqs: int
    disk_wr_reqs: int
    net_rx_bytes: int
    net_tx_bytes: int


class VmMetricsOut(VmRates):
    host: str
    ts: float
    mem_source: str
    balloon_kib: int | None
    totals: Totals
    guest: dict[str, Any] | None = Field(
        description="the guest agent's get_metrics (validated), when its agent is connected"
    )


class HistoryOut(BaseModel):
    host: str
    uuid: str
    since: float
    until: float
    step: float = Field(description="seconds between points")
    fields: list[str]
    series: dict[str, list[float | None]] = Field(
        description="columnar: `ts` (Unix seconds) and one list per field, same length"
    )
