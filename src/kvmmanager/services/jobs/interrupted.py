"""What a job that was running when its manager instance went away says happened
(issue 16 M1).

A job found `running` whose instance is gone was interrupted either by a restart of this
same server (one instance, or this instance's predecessor at the same address on this
machine) or by the death of another instance sharing the database. "The server
restarted" is said only of the first; the second names the instance that stopped, so a
user reading the job on a surviving instance is not told a restart happened that did not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from kvmmanager.db.fleet_models import Instance

RESTARTED = "the server restarted"


@dataclass(frozen=True)
class Here:
    """The instance judging: its machine and the address it serves at."""

    hostname: str
    address: str


def instance_stopped(address: str) -> str:
    where = f" ({address})" if address else ""
    return f"the manager instance running it{where} stopped"


def reasons(s: Session, instance_ids: Iterable[str | None], here: Here | None) -> dict[str, str]:
    """The reason for each of `instance_ids` (the interrupted jobs' instances). `here` is
    given at this instance's start, where a job of the same machine and address is this
    server's own, restarted; None for the lease holder's sweep of instances that died
    while it ran (never a restart of its own)."""
    ids = {i for i in instance_ids if i}
    rows = {
        r.id: r
        for r in s.execute(
            select(Instance.id, Instance.hostname, Instance.address).where(Instance.id.in_(ids))
        )
    }
    out: dict[str, str] = {}
    for i in ids:
        row = rows.get(i)
        if row is None:
            # Its row is gone (forgotten after a day): which instance it was is unknown.
            out[i] = RESTARTED if here is not None else instance_stopped("")
        elif here is not None and (row.hostname, row.address) == (here.hostname, here.address):
            out[i] = RESTARTED
        else:
            out[i] = instance_stopped(row.address)
    return out


def reason_for(table: dict[str, str], instance_id: str | None, here: Here | None) -> str:
    """A job without an instance (made before instances were recorded) is a restart's."""
    if instance_id is None:
        return RESTARTED if here is not None else instance_stopped("")
    return table[instance_id]
