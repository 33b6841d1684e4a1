"""Metrics: what a user reads on a VM's graphs, the dashboard and Prometheus.

- service.py: collecting them (one bulk stats call per host per interval) and answering
  for them (MetricsService, `manager.metrics`; WINDOWS, the ranges a graph may ask for);
- rates.py: counters turned into rates between two collections;
- history.py: the in-memory history and the tiers a range reads;
- store.py: the tiers persisted in the database (5-minute and hourly means);
- guest.py: what only the guest agent knows (filesystems, memory inside), polled apart;
- prom.py: the Prometheus exposition.

Imports run one way: service -> rates/history/store/guest; prom reads the service.
"""
