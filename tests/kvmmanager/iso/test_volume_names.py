"""The agent ISO's volume name and the version read back from it."""

import os

from kvmmanager.iso import ISO_NAME, agent_version
from kvmmanager.iso.volume_names import volume_name, volume_version


def test_volume_names_carry_the_version() -> None:
    assert volume_name("1.2.3") == "kvmmanager-guest-agent-1.2.3.iso"
    assert volume_version("kvmmanager-guest-agent-1.2.3.iso") == "1.2.3"
    assert volume_version(ISO_NAME) is None
    assert volume_version("debian.iso") is None
    assert os.sep not in volume_name(agent_version())
