"""One manager instance as a child process, driven line by line over stdin, for the
failover test and bench/failover.py (a process that can be killed with SIGKILL, unlike a
Manager object inside the test's own process).

It reads its settings from the environment (KVMM_DATABASE__URL, KVMM_FLEET__*,
KVMM_DATA_DIR, ...) like `kvm-manager serve`, starts a Manager, and prints:

    KVMM-READY <instance id>         once started
    KVMM-LEASE <1|0>                 whenever it gains or loses the singleton lease
    KVMM-RUN <schedule> <due>        whenever it published a schedule.run
    KVMM-JOB <job id>                after `job`
    KVMM-SCHEDULE <name>             after `schedule NAME RUN_AT`

Commands: `job` starts a job that works until the process dies; `schedule NAME RUN_AT`
makes a `once` schedule (an ISO 8601 UTC time) whose target VM does not exist, so its
run fails fast: what counts is that, and how often, it runs; `stop` stops cleanly.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from datetime import datetime

from kvmmanager.core.config import get_settings
from kvmmanager.services.automation.schedules import ScheduleSpec
from kvmmanager.services.manager import Manager
from kvmmanager.virt.events import Event


def say(*words: object) -> None:
    print(*words, flush=True)


async def main() -> None:
    m = Manager(get_settings())

    def on_event(e: Event) -> None:
        if e.kind == "schedule.run" and not e.origin:  # its own runs, not relayed ones
            say("KVMM-RUN", e.data["name"], e.data["due_at"])

    async def on_lease(held: bool) -> None:
        say("KVMM-LEASE", int(held))

    m.bus.add_listener(on_event)
    m.lease.on_change(on_lease)
    await m.start()
    say("KVMM-READY", m.instances.id)
    hold, started = threading.Event(), threading.Event()

    def work(p: object) -> None:
        p(1, 10, "kvmm-t-fleet working")  # type: ignore[operator]
        started.set()  # the job row says running before its function is called
        hold.wait()  # until the process is killed (or stops)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "stop":
            break
        if words[0] == "job":
            job_id = m.jobs.start("kvmm-t-fleet.long", "local/kvmm-t-fleet", work, "admin")
            await asyncio.to_thread(started.wait, 60)
            say("KVMM-JOB", job_id)
        elif words[0] == "schedule":
            name, run_at = words[1], datetime.fromisoformat(words[2])
            target = {"host": "local", "vm": "kvmm-t-fleet-nosuch"}
            spec = ScheduleSpec(name=name, action="start", vms=[target], kind="once", run_at=run_at)
            await asyncio.to_thread(m.schedules.create, spec)
            say("KVMM-SCHEDULE", name)
    hold.set()
    await m.stop()


if __name__ == "__main__":
    asyncio.run(main())
