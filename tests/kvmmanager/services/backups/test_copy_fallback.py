"""The block-commit pivot of the copy fallback, step by step.

The race it covers was seen in CI (stop 15): blockJobInfo already reported cur == end but
QEMU had not yet sent BLOCK_JOB_READY, so libvirt refused the pivot with
VIR_ERR_BLOCK_COPY_ACTIVE ("block job ... not ready for pivot yet"). That is "ask again",
not a failure that leaves the VM on its overlay. It cannot be provoked on demand with a
real QEMU, so the domain here is a stand-in that answers as libvirt did in that run.
"""

from __future__ import annotations

import libvirt
import pytest

from kvmmanager.services.backups.copy_fallback import Overlay, commit_step

XML = """<domain type='qemu'><name>v</name><devices>
<disk type='file' device='disk'><source file='{src}'/><target dev='vda'/></disk>
</devices></domain>"""


def refusal(code: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, 0, message, 2, "", None, None, 0, 0)
    return exc


class PivotNotReadyYet:
    """Commit finished copying (cur == end) but the job is not ready for a pivot once."""

    def __init__(self, code: int) -> None:
        self.source = "/pool/disk.overlay.qcow2"
        self.refusals = 1
        self.code = code

    def XMLDesc(self, flags: int = 0) -> str:
        return XML.format(src=self.source)

    def blockJobInfo(self, disk: str, flags: int = 0) -> dict[str, int]:
        return {"type": 4, "bandwidth": 0, "cur": 100, "end": 100}

    def blockJobAbort(self, disk: str, flags: int = 0) -> None:
        if self.refusals:
            self.refusals -= 1
            raise refusal(self.code, f"block job 'commit-{disk}' not ready for pivot yet")
        self.source = "/pool/disk.qcow2"


OVERLAY = Overlay(disk="vda", base="/pool/disk.qcow2", base_format="qcow2", pool="p", volume="o")


@pytest.mark.parametrize(
    "code", [libvirt.VIR_ERR_BLOCK_COPY_ACTIVE, libvirt.VIR_ERR_OPERATION_INVALID]
)
def test_a_pivot_refused_as_not_ready_yet_is_asked_again(code: int) -> None:
    dom = PivotNotReadyYet(code)
    assert commit_step(dom, OVERLAY, started=True) == "waiting"  # type: ignore[arg-type]
    assert commit_step(dom, OVERLAY, started=True) == "done"  # type: ignore[arg-type]
    assert dom.source == OVERLAY.base


def test_any_other_pivot_refusal_is_raised() -> None:
    dom = PivotNotReadyYet(libvirt.VIR_ERR_INTERNAL_ERROR)
    with pytest.raises(libvirt.libvirtError):
        commit_step(dom, OVERLAY, started=True)  # type: ignore[arg-type]
