"""The composition root: start migrates, bootstraps, connects `local`; stop releases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kvmmanager.db.models import Host
from kvmmanager.services.manager import Manager


async def test_start_adds_local_host_and_connects(manager: Any) -> None:
    with manager.db() as s:
        hosts = [(h.name, h.uri) for h in s.scalars(select(Host))]
    assert hosts == [("local", "test:///default")]
    local = manager.registry.get("local")
    await local.wait_connected(seconds=60)
    assert local.status == "connected"
    assert manager.users.get("admin").role == "admin"
    assert manager.started


async def test_restart_keeps_hosts_and_users(settings: Any) -> None:
    first = Manager(settings)
    await first.start()
    password = first.initial_admin_password
    first.users.create("kvmm-t-plat-keep", "long-enough", "viewer")
    with first.db.begin() as s:
        s.add(Host(name="kvmm-t-plat-h2", uri="test:///default"))
    await first.stop()

    second = Manager(settings)
    await second.start()
    try:
        assert second.initial_admin_password is None  # no second bootstrap
        assert second.users.authenticate("admin", password).role == "admin"
        assert second.users.get("kvmm-t-plat-keep").role == "viewer"
        assert [h.name for h in second.registry.all()] == ["kvmm-t-plat-h2", "local"]
    finally:
        await second.stop()


def test_services_are_built_lazily_with_the_manager(settings: Any) -> None:
    m = Manager(settings)
    assert "vms" not in m.__dict__
    vms = m.vms
    assert m.vms is vms  # one instance per manager
    m.engine.dispose()


async def test_a_bad_host_row_does_not_stop_the_manager(settings: Any) -> None:
    m = Manager(settings)
    m.prepare_database()
    with m.db.begin() as s:
        s.add(Host(name="local", uri="test:///default"))
        s.add(Host(name="Bad Name", uri="test:///default"))
    await m.start()
    try:
        assert [h.name for h in m.registry.all()] == ["local"]
        assert "agents" in m.__dict__  # listens to the bus from the start
    finally:
        await m.stop()
