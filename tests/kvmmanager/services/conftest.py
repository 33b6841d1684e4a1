"""Service tests that need only the database, not libvirt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kvmmanager.core.config import Settings


@pytest.fixture
def db_manager(settings: Settings) -> Iterator[Any]:
    """A Manager with a migrated database and the first admin, no hosts connected."""
    from kvmmanager.services.manager import Manager

    m = Manager(settings)
    m.prepare_database()
    yield m
    m.engine.dispose()


@pytest.fixture
async def jobs_manager(db_manager: Any) -> AsyncIterator[Any]:
    """db_manager whose job service runs on the test's event loop."""
    db_manager.jobs.attach_loop(asyncio.get_running_loop())
    yield db_manager
    await db_manager.jobs.shutdown()
