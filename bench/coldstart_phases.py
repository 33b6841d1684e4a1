"""Where the cold start's CPU goes, phase by phase, in one process (issue 19 item 4).

The wall time of `kvm-manager serve` on the shared 2-core machine mostly measures the
other processes (bench/fleet.py prints the load beside it); the CPU each phase costs is
what the start itself can change. Each phase runs as `serve` runs it, in order, and its
thread's CPU time (`time.thread_time`) is printed; the open is timed in its own thread,
as serve runs it (virt/preopen.py), since it runs without the GIL beside the app's build.

    .venv/bin/python bench/coldstart_phases.py --vms 5000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from testdriver import uri, write_node  # noqa: E402


def phase(name: str, t0: float, c0: float) -> tuple[float, float]:
    print(
        f"{name:58s} CPU {time.thread_time() - c0:6.2f} s   wall {time.perf_counter() - t0:6.2f} s"
    )
    return time.perf_counter(), time.thread_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vms", type=int, default=5000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kvmm-bench-phases-"))
    try:
        measure(work, args.vms)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(work: Path, vms: int) -> None:
    node = uri(write_node(work / "node.xml", vms))
    os.environ.update(
        KVMM_DATA_DIR=str(work / "data"),
        KVMM_CONFIG=str(work / "none.toml"),
        KVMM_LIBVIRT__DEFAULT_URI=node,
        KVMM_LIBVIRT__ALLOW_TEST_DRIVER="1",
    )
    print(f"load {Path('/proc/loadavg').read_text().split()[0]}, {vms} domains")
    t, c = time.perf_counter(), time.thread_time()
    import kvmmanager.cli.main  # noqa: F401  (what the console script imports first)
    from kvmmanager.api.app import build_route_state
    from kvmmanager.core.config import get_settings
    from kvmmanager.services.manager import Manager
    from kvmmanager.virt import readers, session
    from kvmmanager.web.app import create_app

    t, c = phase("import the CLI and the web app", t, c)
    settings = get_settings()
    manager = Manager(settings)
    manager.prepare_database()
    manager.host_rows()
    t, c = phase("Manager(), migrate, read the stored hosts", t, c)
    opened: list[object] = []

    def open_ahead() -> None:
        c0 = time.thread_time()
        opened.append(session.open_uri(node))
        opened.append(time.thread_time() - c0)

    opener = threading.Thread(target=open_ahead)
    opener.start()
    app = create_app(settings, warm_routes=True)
    t, c = phase("create_app (route modules imported, routes built)", t, c)
    routes = build_route_state(app)
    t, c = phase(f"the app's route state, {routes} routes (lifespan warm-up)", t, c)
    opener.join()
    print(f"{'libvirt open, in its own thread (beside the two above)':58s} CPU {opened[1]:6.2f} s")
    t, c = time.perf_counter(), time.thread_time()
    snap = readers.read_all("local", opened[0])  # type: ignore[arg-type]
    t, c = phase(f"read_all: {len(snap.domains)} domains", t, c)
    manager.engine.dispose()


if __name__ == "__main__":
    main()
