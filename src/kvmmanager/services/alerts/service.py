"""Alerts: rules, evaluation, firing/resolved history, notifications.

Threshold rules (cpu_pct, mem_pct, disk/net throughput, guest_disk_pct) are evaluated on
the samples of the metrics pipeline: for every host the service waits for the metrics
service's next collection cycle (`metrics.wait_cycle`) and reads the samples it just
made; it never asks libvirt itself. A rule fires for a VM when `value op threshold`
holds for `samples` consecutive samples, and resolves when it fails for as many.

Event rules fire on what the event bus reports: `vm_crashed` (a crash or a failed
stop; resolved when the VM starts again), `host_unreachable` (resolved when it
reconnects), `agent_unresponsive` (the project's agent channel went away from a running
VM; resolved when it is back), `schedule_failed` (a scheduled run failed or partly
failed; resolved by the next good run).

A firing or a resolution is a row in `alerts`, an audit entry (`alerts.firing` /
`alerts.resolved`), an `alert.firing` / `alert.resolved` event (the UI shows it live
through /api/events), a webhook delivery (webhooks.py) and an e-mail (alerts/email.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.db.models import utcnow
from kvmmanager.db.ops_models import ALERT_METRICS, SEVERITIES, Alert, AlertRule
from kvmmanager.services.alerts.email import EmailService
from kvmmanager.services.alerts.evaluation import OPS, RuleState, matches, metric_values
from kvmmanager.services.alerts.webhooks import WebhookService
from kvmmanager.services.fleet.lease import LeaseService
from kvmmanager.services.metrics.service import MetricsService
from kvmmanager.services.users.audit import AuditRecord, AuditService
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

THRESHOLD_METRICS = ALERT_METRICS[:7]
EVENT_METRICS = ALERT_METRICS[7:]
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_SAMPLES = 1000
# Percentages of a whole (cpu_pct may exceed 100 with several vCPUs).
PERCENT_OF_WHOLE = frozenset({"mem_pct", "guest_disk_pct"})
FOLLOW_WAIT = 30.0
EVENT_KINDS = frozenset(
    {"domain.lifecycle", "domain.removed", "host.status", "domain.agent", "schedule.run"}
)
# Published when a rule is created, changed or deleted through this instance; relayed to
# the other instances sharing the database (services/fleet/events.py): the lease holder,
# which evaluates the rules, reloads them.
RULES_CHANGED = "alert_rules.changed"
# Rules whose alerts are about a host or a schedule, not a VM.
NOT_VM_METRICS = ("host_unreachable", "schedule_failed")


@dataclass
class RuleSpec:
    name: str
    metric: str
    threshold: float | None = None
    op: str = ">"
    samples: int = 1
    severity: str = "warning"
    host: str | None = None
    vm: str | None = None
    tag: str | None = None
    enabled: bool = True


def validate_rule(spec: RuleSpec) -> RuleSpec:
    if not _NAME_RE.fullmatch(spec.name or ""):
        raise InvalidInput("name: lowercase letters, digits, '.', '_', '-'", field="name")
    if spec.metric not in ALERT_METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(ALERT_METRICS)}", field="metric")
    if spec.severity not in SEVERITIES:
        raise InvalidInput(f"severity must be one of {', '.join(SEVERITIES)}", field="severity")
    if spec.metric in THRESHOLD_METRICS:
        if spec.threshold is None or spec.threshold != spec.threshold:
            raise InvalidInput(f"a {spec.metric} rule needs a threshold", field="threshold")
        # Every figure is a rate or a percentage: a negative threshold is always crossed.
        if spec.threshold < 0:
            raise InvalidInput(f"threshold of {spec.metric} must be 0 or more", field="threshold")
        if spec.metric in PERCENT_OF_WHOLE and spec.threshold > 100:
            raise InvalidInput(
                f"threshold of {spec.metric} is a percentage: 0..100", field="threshold"
            )
        if spec.op not in OPS:
            raise InvalidInput(f"op must be one of {', '.join(OPS)}", field="op")
        if not 1 <= spec.samples <= MAX_SAMPLES:
            raise InvalidInput(f"samples must be 1..{MAX_SAMPLES}", field="samples")
    elif spec.threshold is not None:
        raise InvalidInput(f"a {spec.metric} rule takes no threshold", field="threshold")
    if spec.vm is not None and spec.host is None:
        raise InvalidInput("a rule for one vm needs its host", field="host")
    if spec.vm is not None and spec.tag is not None:
        raise InvalidInput("a rule is for one vm or for a tag, not both", field="tag")
    return spec


def rule_dict(r: AlertRule) -> dict[str, Any]:
    return {c: getattr(r, c) for c in (
        "id", "name", "metric", "op", "threshold", "samples", "severity", "host", "vm",
        "tag", "enabled", "created_by", "created_at",
    )}  # fmt: skip


def alert_dict(a: Alert) -> dict[str, Any]:
    return {c: getattr(a, c) for c in (
        "id", "rule_id", "rule_name", "metric", "severity", "host", "subject", "subject_name",
        "state", "value", "message", "fired_at", "resolved_at",
    )}  # fmt: skip


class AlertService:
    def __init__(
        self,
        db: sessionmaker[Session],
        bus: EventBus,
        inventory: Inventory,
        registry: HostRegistry,
        lease: LeaseService,
        audit: AuditService,
        metrics: MetricsService,
        webhooks: WebhookService,
        email: EmailService,
        *,
        loop: Callable[[], asyncio.AbstractEventLoop | None],
    ) -> None:
        """`loop`: the Manager's event loop once started (None before): a rule changed
        from a worker thread is announced on it."""
        self._db = db
        self._bus = bus
        self._inventory = inventory
        self._registry = registry
        self._lease = lease
        self._audit_log = audit
        self._metrics = metrics
        self._webhooks = webhooks
        self._email = email
        self._manager_loop = loop
        self._state: dict[tuple[int, str, str], RuleState] = {}
        self._rules: list[AlertRule] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._events_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        # Other instances' rule changes: one reload at a time, again while more arrived
        # (two reads racing in threads could leave the older rules in place).
        self._reloading: asyncio.Task[None] | None = None
        self._stale = False

    # ---- rules -------------------------------------------------------------------------

    def create_rule(self, spec: RuleSpec, created_by: str | None = None) -> dict[str, Any]:
        spec = self._check_scope(validate_rule(spec))
        with self._db.begin() as s:
            if s.scalar(select(AlertRule.id).where(AlertRule.name == spec.name)) is not None:
                raise Conflict(f"an alert rule named '{spec.name}' already exists", field="name")
            row = AlertRule(**vars(spec), created_by=created_by)
            s.add(row)
            s.flush()
            out = rule_dict(row)
        self._reload()
        self._announce(out["id"], "created")
        return out

    def _check_scope(self, spec: RuleSpec) -> RuleSpec:
        """A rule's host and VM exist now (a typo would otherwise watch nothing, silently)."""
        if spec.host is not None and spec.host not in {h.name for h in self._registry.all()}:
            raise InvalidInput(f"host '{spec.host}' does not exist", field="host")
        if spec.vm is not None and spec.host is not None:
            try:
                self._inventory.domain(spec.host, spec.vm)
            except NotFound:
                raise InvalidInput(
                    f"vm '{spec.vm}' does not exist on host '{spec.host}'", field="vm"
                ) from None
        return spec

    def _rule(self, s: Any, ident: str | int) -> AlertRule:
        text = str(ident)
        row: AlertRule | None = s.scalar(
            select(AlertRule).where(
                AlertRule.id == int(text)
                if (text.isdigit() and len(text) < 19)
                else AlertRule.name == text
            )
        )
        if row is None:
            raise NotFound(f"alert rule '{ident}' not found", field="rule")
        return row

    def list_rules(self) -> list[dict[str, Any]]:
        with self._db() as s:
            return [rule_dict(r) for r in s.scalars(select(AlertRule).order_by(AlertRule.name))]

    def get_rule(self, ident: str | int) -> dict[str, Any]:
        with self._db() as s:
            return rule_dict(self._rule(s, ident))

    def update_rule(self, ident: str | int, spec: RuleSpec) -> dict[str, Any]:
        """Change a rule whole, keeping its id and history. Its evaluation starts afresh:
        an alert it has firing is resolved on the next good sample/event as usual."""
        spec = self._check_scope(validate_rule(spec))
        with self._db.begin() as s:
            row = self._rule(s, ident)
            if spec.name != row.name and s.scalar(
                select(AlertRule.id).where(AlertRule.name == spec.name)
            ):
                raise Conflict(f"an alert rule named '{spec.name}' already exists", field="name")
            for key, value in vars(spec).items():
                setattr(row, key, value)
            out = rule_dict(row)
        # Counters of the old condition mean nothing for the new one; open alerts stay.
        self._restart_counters(out["id"])
        self._reload()
        self._announce(out["id"], "updated")
        return out

    def _restart_counters(self, rule_id: int) -> None:
        for key, st in self._state.items():
            if key[0] == rule_id:
                self._state[key] = RuleState(alert_id=st.alert_id)

    def count_firing(self) -> int:
        with self._db() as s:
            return int(
                s.scalar(select(func.count()).select_from(Alert).where(Alert.state == "firing"))
                or 0
            )

    def set_enabled(self, ident: str | int, enabled: bool) -> dict[str, Any]:
        with self._db.begin() as s:
            row = self._rule(s, ident)
            row.enabled = enabled
            out = rule_dict(row)
        self._reload()
        self._announce(out["id"], "enabled" if enabled else "disabled")
        return out

    def delete_rule(self, ident: str | int) -> None:
        with self._db.begin() as s:
            row = self._rule(s, ident)
            rid = row.id
            s.delete(row)
        self._state = {k: v for k, v in self._state.items() if k[0] != rid}
        self._reload()
        self._announce(rid, "deleted")

    def list_alerts(
        self, state: str | None = None, rule: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if state not in (None, "firing", "resolved"):
            raise InvalidInput("state must be firing or resolved", field="state")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be 1..1000", field="limit")
        with self._db() as s:
            q = select(Alert).order_by(Alert.fired_at.desc(), Alert.id.desc()).limit(limit)
            if state is not None:
                q = q.where(Alert.state == state)
            if rule is not None:
                q = q.where(Alert.rule_id == self._rule(s, rule).id)
            return [alert_dict(a) for a in s.scalars(q)]

    def _reload(self) -> None:
        with self._db() as s:
            self._rules = list(s.scalars(select(AlertRule).where(AlertRule.enabled.is_(True))))

    def _announce(self, rule_id: int, change: str) -> None:
        """Tell the other instances (through the bus and the fleet relay) to reload."""
        loop = self._manager_loop()
        if loop is None or loop.is_closed():
            return  # not started: there is no relay to tell
        event = Event(RULES_CHANGED, host="", subject=str(rule_id), data={"change": change})
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._bus.publish(event)
        else:  # a synchronous route runs in a worker thread; the bus is the loop's
            loop.call_soon_threadsafe(self._bus.publish, event)

    def _on_bus(self, event: Event) -> None:
        """Another instance changed a rule: the same reset as a local change, then the
        rules are read again (in a thread: the database is not read on the loop)."""
        if event.kind != RULES_CHANGED or not event.origin:
            return
        rule_id = int(event.subject) if event.subject.isdigit() else None
        if event.data.get("change") == "deleted":
            self._state = {k: v for k, v in self._state.items() if k[0] != rule_id}
        elif event.data.get("change") == "updated" and rule_id is not None:
            self._restart_counters(rule_id)
        self._stale = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(
                self._reload_while_stale(), name="kvmm-alerts-reload"
            )

    async def _reload_while_stale(self) -> None:
        while self._stale:
            self._stale = False
            try:
                await asyncio.to_thread(self._reload)
            except Exception:
                # The next change, or a lease change, reads them again.
                log.exception("reloading the alert rules changed elsewhere failed")

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Called by Manager.start(): load rules and open alerts, follow metrics and events."""
        self._reload()
        self._apply_firing(self._firing())
        # Evaluation is singleton work: only the lease holder fires and resolves alerts
        # (and so notifies); an instance taking over first reads what is firing now.
        self._lease.on_change(self._lease_changed)
        self._bus.add_listener(self._on_bus)
        loop = asyncio.get_running_loop()
        self._events_task = loop.create_task(self._follow_events(), name="kvmm-alerts-events")
        self._supervisor = loop.create_task(self._follow_hosts(), name="kvmm-alerts-hosts")
        self._webhooks.start()

    async def _lease_changed(self, held: bool) -> None:
        if held:
            await asyncio.to_thread(self._reload)
            # Read in a thread, applied here: the evaluators use the state on this loop.
            self._apply_firing(await asyncio.to_thread(self._firing))

    def _firing(self) -> dict[tuple[int, str, str], int]:
        with self._db() as s:
            return {
                (a.rule_id, a.host, a.subject): a.id
                for a in s.scalars(select(Alert).where(Alert.state == "firing"))
            }

    def _apply_firing(self, firing: dict[tuple[int, str, str], int]) -> None:
        """Align the open alerts with the database (the previous holder fired some)."""
        for key, st in self._state.items():
            if key not in firing:
                st.alert_id = None
        for key, alert_id in firing.items():
            self._state.setdefault(key, RuleState()).alert_id = alert_id

    async def aclose(self) -> None:
        tasks = [
            t
            for t in (self._events_task, self._supervisor, self._reloading, *self._tasks.values())
            if t
        ]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _follow_hosts(self) -> None:
        """One follower of the metrics cycles per host the registry has."""
        while True:
            names = {hc.name for hc in self._registry.all()}
            for name in names - self._tasks.keys():
                self._tasks[name] = asyncio.get_running_loop().create_task(self._follow(name))
            for name in self._tasks.keys() - names:
                self._tasks.pop(name).cancel()
            await asyncio.sleep(5)

    async def _follow(self, host: str) -> None:
        seq = 0
        while True:
            try:
                new = await self._metrics.wait_cycle(host, seq, FOLLOW_WAIT)
            except KvmmError:
                await asyncio.sleep(1.0)  # the metrics service does not know the host yet
                continue
            if new == seq:
                continue
            seq = new
            if not self._lease.held:
                continue
            try:
                hm = self._metrics.host(host)
                self.clear_gone(host)
                self.evaluate(host, metric_values(self._inventory, host, hm.latest, hm.guest))
            except Exception:
                log.exception("alert evaluation for %s failed", host)

    async def _follow_events(self) -> None:
        with self._bus.subscribe(predicate=lambda e: e.kind in EVENT_KINDS) as sub:
            async for event in sub:
                if not self._lease.held:
                    continue
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("alert evaluation of %s failed", event.kind)

    # ---- evaluation --------------------------------------------------------------------

    def evaluate(self, host: str, vms: dict[str, dict[str, Any]]) -> None:
        """Apply threshold rules to one sample per VM: {uuid: {"name", "tags", metric: value}}.
        The metrics follower calls it; tests may feed synthetic samples."""
        for rule in self._rules:
            if rule.metric not in THRESHOLD_METRICS:
                continue
            for uuid, v in vms.items():
                if not matches(rule, host, uuid, v):
                    continue
                value = v.get(rule.metric)
                if value is None:
                    continue  # unknown this time (first sample, VM off): no evidence
                st = self._state.setdefault((rule.id, host, uuid), RuleState())
                change = st.observe(OPS[rule.op](value, rule.threshold), rule.samples)
                if change == "fire":
                    msg = f"{rule.metric} {value:.4g} {rule.op} {rule.threshold:g}"
                    self._fire(rule, host, uuid, v.get("name", uuid), value, msg, st)
                elif change == "resolve":
                    msg = f"{rule.metric} back to {value:.4g}"
                    self._resolve(rule, host, uuid, value, msg, st)

    def clear_gone(self, host: str) -> None:
        """Resolve the open alerts of VMs the host no longer has. A VM deleted while no
        event could say so (this manager was down, or was not the lease holder) kept its
        alerts firing forever, and the alerts page kept showing them. Only once the host's
        inventory has been read: before that every VM would look gone."""
        if host not in self._inventory.hosts():
            return
        known = {d.uuid for d in self._inventory.domains(host)}
        rules = {r.id: r for r in self._rules if r.metric not in NOT_VM_METRICS}
        for key, st in list(self._state.items()):
            rid, h, subject = key
            if h == host and st.alert_id is not None and rid in rules and subject not in known:
                self._resolve(rules[rid], h, subject, None, "vm deleted", st)
                self._state[key] = RuleState()

    def on_event(self, e: Event) -> None:
        data = e.data or {}
        if e.kind == "domain.removed":
            # Gone from the inventory: undefined, or found missing when the host was read
            # again after a reconnect (no lifecycle event then).
            self._clear_vm(e.host, e.subject, deleted=True)
            return
        if e.kind == "domain.lifecycle" and data.get("event") in ("stopped", "undefined"):
            self._clear_vm(e.host, e.subject, deleted=data.get("event") == "undefined")
        for rule in self._rules:
            verdict = self._event_verdict(rule.metric, e, data, self._running(e))
            if verdict is None:
                continue
            bad, subject, name, msg = verdict
            info = {"name": name, "tags": self._tags(e.host, subject)}
            if rule.metric != "schedule_failed" and not matches(rule, e.host, subject, info):
                continue
            st = self._state.setdefault((rule.id, e.host, subject), RuleState())
            if bad and st.alert_id is None:
                self._fire(rule, e.host, subject, name, None, msg, st)
            elif not bad and st.alert_id is not None:
                self._resolve(rule, e.host, subject, None, msg, st)

    def _clear_vm(self, host: str, uuid: str, deleted: bool) -> None:
        """A VM that stopped has no more CPU, disk or network figures and no agent: its
        threshold and agent alerts resolve (they stayed firing for a stopped VM); a deleted
        VM's alerts all resolve. A crash keeps its own vm_crashed alert."""
        why = "vm deleted" if deleted else "vm stopped"
        for rule in self._rules:
            if rule.metric in NOT_VM_METRICS:
                continue
            if rule.metric == "vm_crashed" and not deleted:
                continue
            st = self._state.get((rule.id, host, uuid))
            if st is not None and st.alert_id is not None:
                self._resolve(rule, host, uuid, None, why, st)
                self._state[(rule.id, host, uuid)] = RuleState()

    def _running(self, e: Event) -> bool:
        if e.kind != "domain.agent":
            return False
        with contextlib.suppress(KvmmError):
            return self._inventory.domain(e.host, e.subject).state == "running"
        return False

    def _tags(self, host: str, uuid: str) -> list[str]:
        with contextlib.suppress(KvmmError):
            return list(self._inventory.domain(host, uuid).tags)
        return []

    @staticmethod
    def _event_verdict(
        metric: str, e: Event, d: dict[str, Any], running: bool = False
    ) -> tuple[bool, str, str, str] | None:
        name = str(d.get("name") or e.subject)
        if metric == "vm_crashed" and e.kind == "domain.lifecycle":
            ev, detail = d.get("event"), d.get("detail")
            if ev == "crashed" or (ev == "stopped" and detail in ("crashed", "failed")):
                return True, e.subject, name, f"vm {name} stopped unexpectedly ({ev}/{detail})"
            if ev == "started":
                return False, e.subject, name, f"vm {name} started again"
        if metric == "host_unreachable" and e.kind == "host.status":
            status = d.get("status")
            if status in ("reconnecting", "failed", "disconnected"):
                why = d.get("reason") or status
                return True, e.host, e.host, f"host {e.host} unreachable: {why}"
            if status == "connected":
                return False, e.host, e.host, f"host {e.host} connected again"
        if (
            metric == "agent_unresponsive"
            and e.kind == "domain.agent"
            and d.get("channel") == "kvmm"
        ):
            up = d.get("status") == "connected"
            # An agent that goes away with its VM's shutdown is not unresponsive.
            bad = not up and running
            text = "answers again" if up else f"is {d.get('status')}"
            return bad, e.subject, name, f"agent of vm {name} {text}"
        if metric == "schedule_failed" and e.kind == "schedule.run":
            status = d.get("status")
            if status in ("failed", "partial", "ok"):
                bad = status != "ok"
                return bad, f"schedule:{name}", name, f"schedule {name}: {d.get('message', '')}"
        return None

    # ---- notifications -----------------------------------------------------------------

    def _fire(
        self, rule: AlertRule, host: str, subject: str, name: str, value: float | None,
        message: str, st: RuleState,
    ) -> None:  # fmt: skip
        with self._db.begin() as s:
            a = Alert(
                rule_id=rule.id, rule_name=rule.name, metric=rule.metric,
                severity=rule.severity, host=host, subject=subject, subject_name=name,
                state="firing", value=value, message=message,
            )  # fmt: skip
            s.add(a)
            s.flush()
            st.alert_id = a.id
            out = alert_dict(a)
            self._audit(s, "alerts.firing", out)
        self._notify("alert.firing", out)

    def _resolve(
        self, rule: AlertRule, host: str, subject: str, value: float | None, message: str,
        st: RuleState,
    ) -> None:  # fmt: skip
        alert_id, st.alert_id = st.alert_id, None
        with self._db.begin() as s:
            a = s.get(Alert, alert_id)
            if a is None or a.state != "firing":
                return
            a.state, a.resolved_at, a.message = "resolved", utcnow(), message
            if value is not None:
                a.value = value
            out = alert_dict(a)
            self._audit(s, "alerts.resolved", out)
        self._notify("alert.resolved", out)

    def _audit(self, s: Any, action: str, a: dict[str, Any]) -> None:
        self._audit_log.record(
            AuditRecord(
                action=action,
                target=f"{a['host']}/{a['subject_name']}".strip("/"),
                params={k: a[k] for k in ("rule_name", "metric", "severity", "value", "message")},
                result="ok",
            ),
            session=s,
        )

    def _notify(self, kind: str, a: dict[str, Any]) -> None:
        payload = {"event": kind, "alert": {k: _jsonable(v) for k, v in a.items()}}
        self._bus.publish(Event(kind, host=a["host"], subject=str(a["id"]), data=payload["alert"]))
        self._webhooks.send(kind, payload, a["severity"])
        self._email.send(kind, payload["alert"], a["severity"])


def _jsonable(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v
