"""The resources form's edit: what the person changed on the form, and nothing they left
as it was shown (services/vms/resources.py; the page itself: web/test_vm_maximum_pages.py)."""

from __future__ import annotations

from kvmmanager.services.vms.resources import ResourceEdit, resource_edit
from kvmmanager.virt.inventory import DomainInfo

VM = DomainInfo(host="local", name="web1", uuid="u", vcpus=2, max_vcpus=4,
                memory_kib=2048 * 1024, max_memory_kib=4096 * 1024)  # fmt: skip


def test_the_form_as_shown_changes_nothing() -> None:
    edit = resource_edit(VM, 2, 2048, 4, 4096)
    assert edit == ResourceEdit()
    assert not edit.cpu and not edit.memory


def test_only_the_changed_values_are_edited() -> None:
    edit = resource_edit(VM, 3, 2048, 4, 8192)
    assert edit == ResourceEdit(vcpus=3, max_memory_mib=8192)
    assert edit.cpu and edit.memory


def test_a_vm_without_maximums_shows_its_current_values_as_them() -> None:
    plain = DomainInfo(host="local", name="db", uuid="v", vcpus=2, memory_kib=1024 * 1024)
    assert resource_edit(plain, 2, 1024, 2, 1024) == ResourceEdit()
    assert resource_edit(plain, 2, 1024, None, None) == ResourceEdit()
    assert resource_edit(plain, 2, 1024, 8, None) == ResourceEdit(max_vcpus=8)
