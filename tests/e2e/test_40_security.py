"""Scenario 4: the guest side of the security rules, with a real file system under the
agent: the allow-list, the path jail, a planted symlink and the size cap."""

from __future__ import annotations

import pytest

from .conftest import Fleet, Lab
from .support.api import ApiError

pytestmark = pytest.mark.vm

SHADOW_MARK = "kvmm-e2e-not-a-real-hash"


def _refused(exc: ApiError) -> None:
    assert 400 <= exc.status < 500, exc
    assert SHADOW_MARK not in str(exc.body)


def test_exec_outside_the_allow_list_is_refused(lab: Lab, fleet: Fleet) -> None:
    for command in ("sh", "/bin/rm", "python3"):
        with pytest.raises(ApiError) as err:
            lab.api.exec(fleet.agent.name, command, "-c", "true")
        _refused(err.value)


def test_read_outside_the_allowed_paths_is_refused(lab: Lab, fleet: Fleet) -> None:
    for path in ("/etc/shadow", "/data/../etc/shadow", "/proc/1/environ"):
        with pytest.raises(ApiError) as err:
            lab.api.read_file(fleet.agent.name, path)
        _refused(err.value)


def test_symlink_to_shadow_in_an_allowed_dir_is_refused(lab: Lab, fleet: Fleet) -> None:
    vm = fleet.agent.name
    r = lab.api.exec(vm, "ln", "-sf", "/etc/shadow", "/data/e2e-shadow-link")
    assert r["exit_code"] == 0
    with pytest.raises(ApiError) as err:
        lab.api.read_file(vm, "/data/e2e-shadow-link")
    _refused(err.value)
    # Nor may a write follow it.
    with pytest.raises(ApiError) as err:
        lab.api.write_file(vm, "/data/e2e-shadow-link", "overwritten")
    _refused(err.value)


def test_oversize_file_is_refused(lab: Lab, fleet: Fleet) -> None:
    too_big = "x" * (10 * 1024 * 1024 + 1)  # the guest config's max_file_size_mb is 10
    with pytest.raises(ApiError) as err:
        lab.api.write_file(fleet.agent.name, "/data/e2e-too-big.txt", too_big)
    assert 400 <= err.value.status < 500
