"""Key combinations sent to a running guest through libvirt (`virDomainSendKey`).

A browser cannot pass every combination on to the VNC session (Ctrl+Alt+Del, Ctrl+Alt+Fn
and the F-keys belong to the browser or the desktop around it), so the console offers
them by name and the host presses them as Linux input key codes, which libvirt hands to
QEMU's keyboard whatever the guest's layout.

    await send_keys(manager.vms, "local", "web1", "Ctrl+Alt+F2")
"""

from __future__ import annotations

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput
from kvmmanager.services.vms.service import VmRef, VmService, ref, state_of

# Linux input event codes (linux/input-event-codes.h), the key set libvirt accepts on
# every hypervisor driver.
KEY_ESC, KEY_BACKSPACE, KEY_TAB, KEY_ENTER = 1, 14, 15, 28
KEY_LEFTCTRL, KEY_LEFTALT, KEY_SYSRQ, KEY_DELETE = 29, 56, 99, 111
F_KEYS = (59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 87, 88)  # F1 .. F12
HOLD_MS = 50  # long enough for a guest to see a press, short enough to never auto-repeat


def _combos() -> dict[str, tuple[int, ...]]:
    combos: dict[str, tuple[int, ...]] = {
        "Ctrl+Alt+Del": (KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE),
        "Ctrl+Alt+Backspace": (KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE),
    }
    for n, code in enumerate(F_KEYS, start=1):
        combos[f"Ctrl+Alt+F{n}"] = (KEY_LEFTCTRL, KEY_LEFTALT, code)
    for n, code in enumerate(F_KEYS, start=1):
        combos[f"F{n}"] = (code,)
    combos.update({"Esc": (KEY_ESC,), "Tab": (KEY_TAB,), "Enter": (KEY_ENTER,)})
    combos["Alt+SysRq"] = (KEY_LEFTALT, KEY_SYSRQ)
    return combos


KEY_COMBOS = _combos()
RUNNING = frozenset({"running", "blocked"})


def _send(dom: libvirt.virDomain, host: str, combo: str, codes: tuple[int, ...]) -> VmRef:
    state = state_of(dom)
    if state not in RUNNING:
        raise Conflict(f"vm '{dom.name()}' must be running to receive keys (state: {state})")
    dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, HOLD_MS, list(codes), len(codes), 0)
    return ref(host, dom, f"Sent {combo} to {dom.name()}")


async def send_keys(vms: VmService, host: str, vm: str, combo: str) -> VmRef:
    codes = KEY_COMBOS.get(combo)
    if codes is None:
        raise InvalidInput(
            f"unknown key combination {combo!r}; choose one of the list", field="keys"
        )
    return await vms.run_on(host, vm, _send, host, combo, codes)
