"""Prometheus exposition of the metrics service (prometheus-client custom collector).

Series are built from the service's latest collection at scrape time (no per-VM Gauge
objects to create and forget as VMs come and go). VM series carry `host` and `vm` (the
name) labels. Cumulative figures are exported as counters, as Prometheus wants: it
computes rates itself and understands that a counter restarts with its VM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvmmanager.services.metrics.rates import ACTIVE_STATES
from kvmmanager.services.metrics.service import MetricsService
from kvmmanager.virt.connection import STATUSES
from kvmmanager.virt.registry import HostRegistry

VM_LABELS = ["host", "vm"]
_COUNTERS = (
    ("cpu_seconds", "kvmm_vm_cpu_seconds", "CPU time used by the VM"),
    ("disk_rd_bytes", "kvmm_vm_disk_read_bytes", "bytes read from all disks"),
    ("disk_wr_bytes", "kvmm_vm_disk_written_bytes", "bytes written to all disks"),
    ("disk_rd_reqs", "kvmm_vm_disk_read_requests", "read requests on all disks"),
    ("disk_wr_reqs", "kvmm_vm_disk_write_requests", "write requests on all disks"),
    ("net_rx_bytes", "kvmm_vm_network_receive_bytes", "bytes received on all NICs"),
    ("net_tx_bytes", "kvmm_vm_network_transmit_bytes", "bytes sent on all NICs"),
)


class ManagerCollector(Collector):
    def __init__(self, metrics: MetricsService, registry: HostRegistry) -> None:
        self._metrics = metrics
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        svc = self._metrics
        up = GaugeMetricFamily(
            "kvmm_host_up", "1 when the host's libvirt is connected", labels=["host"]
        )
        vms = GaugeMetricFamily(
            "kvmm_host_vms", "VMs on the host by state", labels=["host", "state"]
        )
        cycles = CounterMetricFamily(
            "kvmm_metrics_collections", "stats collections done", labels=["host"]
        )
        overruns = CounterMetricFamily(
            "kvmm_metrics_overruns",
            "collections skipped: the previous one still ran",
            labels=["host"],
        )
        errors = CounterMetricFamily("kvmm_metrics_errors", "failed collections", labels=["host"])
        duration = GaugeMetricFamily(
            "kvmm_metrics_collection_seconds", "wall time of the last collection", labels=["host"]
        )
        running = GaugeMetricFamily(
            "kvmm_vm_active", "1 when the VM runs (or is paused)", labels=VM_LABELS
        )
        cpu_pct = GaugeMetricFamily(
            "kvmm_vm_cpu_percent",
            "CPU use over the last interval, % of one host CPU",
            labels=VM_LABELS,
        )
        mem = GaugeMetricFamily("kvmm_vm_memory_used_bytes", "memory in use", labels=VM_LABELS)
        counters = {
            key: CounterMetricFamily(name, doc, labels=VM_LABELS) for key, name, doc in _COUNTERS
        }
        g_cpu = GaugeMetricFamily(
            "kvmm_vm_guest_cpu_percent", "CPU use seen by the guest agent", labels=VM_LABELS
        )
        g_mem = GaugeMetricFamily(
            "kvmm_vm_guest_memory_used_bytes",
            "memory used seen by the guest agent",
            labels=VM_LABELS,
        )
        host_status = GaugeMetricFamily(
            "kvmm_host_status",
            "1 for the host's current connection status (connected, not responding, ...)",
            labels=["host", "status"],
        )
        overdue = GaugeMetricFamily(
            "kvmm_host_overdue_calls",
            "libvirt calls past their deadline still holding one of the host's workers",
            labels=["host"],
        )
        for hc in self._registry.all():
            up.add_metric([hc.name], 1.0 if hc.connected else 0.0)
            for status in STATUSES:
                host_status.add_metric([hc.name, status], 1.0 if hc.status == status else 0.0)
            overdue.add_metric([hc.name], float(len(hc.workers.overdue())))
        for host in svc.hosts():
            hm = svc.host(host)
            st = hm.stats()
            cycles.add_metric([host], st["cycles"])
            overruns.add_metric([host], st["overruns"])
            errors.add_metric([host], st["errors"])
            duration.add_metric([host], st["last_duration_seconds"])
            by_state: dict[str, int] = {}
            for uuid, s in hm.latest.items():
                by_state[s.state] = by_state.get(s.state, 0) + 1
                labels = [host, s.name]
                active = s.state in ACTIVE_STATES
                running.add_metric(labels, 1.0 if active else 0.0)
                if not active:
                    continue
                if s.values[0] is not None:
                    cpu_pct.add_metric(labels, s.values[0])
                if s.values[1] is not None:
                    mem.add_metric(labels, s.values[1])
                for key, _, _ in _COUNTERS:
                    value = getattr(s, key)
                    if value is not None:
                        counters[key].add_metric(labels, value)
                guest: dict[str, Any] | None = hm.guest.get(uuid)
                if guest:
                    if "cpu_percent" in guest:
                        g_cpu.add_metric(labels, guest["cpu_percent"])
                    used = guest.get("memory", {}).get("used_kb")
                    if used is not None:
                        g_mem.add_metric(labels, used * 1024)
            for state, n in sorted(by_state.items()):
                vms.add_metric([host, state], n)
        yield from (
            up,
            host_status,
            overdue,
            vms,
            cycles,
            overruns,
            errors,
            duration,
            running,
            cpu_pct,
            mem,
        )
        yield from counters.values()
        yield from (g_cpu, g_mem)


def exposition(metrics: MetricsService, hosts: HostRegistry) -> bytes:
    """The text exposition: this manager's series, then the doctor's health gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ManagerCollector(metrics, hosts))
    out = generate_latest(registry)
    try:
        from kvmmanager.services.hosts.doctor import REGISTRY as DOCTOR
    except ImportError:
        return out
    return out + generate_latest(DOCTOR)
