"""One or more examples for every command, shown at the end of its `--help`.

Keyed by the command's path under `kvm-manager`. tests/kvmmanager/cli/test_help_examples.py
checks that every command has one here and that each parses with that command's own
arguments and flags, so an example cannot name a flag the command lost. No square
brackets: `--help` renders rich markup.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "doctor": ("kvm-manager doctor", "kvm-manager doctor --host lab --pool default"),
    "instances": ("kvm-manager instances",),
    "login": ("kvm-manager login --username admin",),
    "serve": ("kvm-manager serve --host 0.0.0.0 --port 8000",),
    # The guest agent.
    "agent status": ("kvm-manager agent status web1",),
    "agent ping": ("kvm-manager agent ping web1",),
    "agent info": ("kvm-manager agent info web1",),
    "agent system": ("kvm-manager agent system web1 --host lab",),
    "agent network": ("kvm-manager agent network web1",),
    "agent disks": ("kvm-manager agent disks web1",),
    "agent metrics": ("kvm-manager agent metrics web1",),
    "agent users": ("kvm-manager agent users web1",),
    "agent time": ("kvm-manager agent time web1",),
    "agent processes": ("kvm-manager agent processes web1 --limit 20",),
    "agent exec": (
        "kvm-manager agent exec web1 uname -a",
        "kvm-manager agent exec web1 --timeout 60 --workdir /srv ls -l",
    ),
    "agent cp": (
        "kvm-manager agent cp ./big.tar web1:/var/tmp/big.tar",
        "kvm-manager agent cp web1:/var/log/syslog ./syslog --resume",
    ),
    "agent shutdown": ("kvm-manager agent shutdown web1 --delay 30",),
    "agent reboot": ("kvm-manager agent reboot web1",),
    "agent freeze": ("kvm-manager agent freeze web1 --thaw-after 60",),
    "agent thaw": ("kvm-manager agent thaw web1",),
    "agent freeze-status": ("kvm-manager agent freeze-status web1",),
    "agent service": ("kvm-manager agent service web1 nginx restart",),
    "agent ssh-keys": (
        "kvm-manager agent ssh-keys web1 deb --add 'ssh-ed25519 AAAAC3Nza... me@laptop'",
    ),
    "agent methods": ("kvm-manager agent methods web1",),
    "agent call": ("kvm-manager agent call web1 get_disk_usage --params '{}'",),
    # The agent ISO.
    "agent-iso build": ("kvm-manager agent-iso build --output ./kvmmanager-guest-agent.iso",),
    "agent-iso locate": ("kvm-manager agent-iso locate",),
    "agent-iso status": ("kvm-manager agent-iso status --host lab",),
    "agent-iso deploy": (
        "kvm-manager agent-iso deploy --host lab",
        "kvm-manager agent-iso deploy --local",
    ),
    "agent-iso install": ("kvm-manager agent-iso install web1",),
    "agent-iso eject": ("kvm-manager agent-iso eject web1",),
    # Alerts.
    "alert list": ("kvm-manager alert list --state firing",),
    "alert rule list": ("kvm-manager alert rule list",),
    "alert rule add": (
        "kvm-manager alert rule add hot-cpu cpu_pct --threshold 90 --samples 3 --vm web1",
    ),
    "alert rule enable": ("kvm-manager alert rule enable 3",),
    "alert rule disable": ("kvm-manager alert rule disable 3",),
    "alert rule remove": ("kvm-manager alert rule remove 3",),
    "alert webhook list": ("kvm-manager alert webhook list",),
    "alert webhook add": (
        "kvm-manager alert webhook add ops https://hooks.example.org/kvm"
        ' --secret "$(openssl rand -hex 16)"',
    ),
    "alert webhook ping": ("kvm-manager alert webhook ping 1",),
    "alert webhook deliveries": ("kvm-manager alert webhook deliveries 1 --limit 20",),
    "alert webhook remove": ("kvm-manager alert webhook remove 1",),
    "alert email list": ("kvm-manager alert email list",),
    "alert email add": (
        "kvm-manager alert email add ops smtp.example.org --to ops@example.org "
        "--from kvm@example.org --security starttls",
    ),
    "alert email test": ("kvm-manager alert email test 1",),
    "alert email remove": ("kvm-manager alert email remove 1",),
    # Backups.
    "backup list": ("kvm-manager backup list",),
    "backup add": (
        "kvm-manager backup add nightly web1 web2 --keep-last 7",
        "kvm-manager backup add weekly --tag prod --method backup --pool backups --full-every 7",
    ),
    "backup show": ("kvm-manager backup show nightly",),
    "backup run": ("kvm-manager backup run nightly",),
    "backup remove": ("kvm-manager backup remove nightly",),
    "backup backups": ("kvm-manager backup backups nightly web1",),
    "backup restore": ("kvm-manager backup restore nightly web1 nightly-20260101-0200 --yes",),
    "backup images": ("kvm-manager backup images web1",),
    "backup take": ("kvm-manager backup take weekly web1",),
    "backup verify": ("kvm-manager backup verify web1 12",),
    "backup restore-image": (
        "kvm-manager backup restore-image web1 12 --name web1-restored",
        "kvm-manager backup restore-image web1 12 --over --yes",
    ),
    "backup delete-image": ("kvm-manager backup delete-image web1 12",),
    # Batches.
    "batch start": ("kvm-manager batch start web1 web2", "kvm-manager batch start --tag prod"),
    "batch shutdown": ("kvm-manager batch shutdown --tag prod --mode acpi",),
    "batch destroy": ("kvm-manager batch destroy web1 web2",),
    "batch reboot": ("kvm-manager batch reboot --tag web",),
    "batch reset": ("kvm-manager batch reset web1 web2",),
    "batch suspend": ("kvm-manager batch suspend --tag batch-jobs",),
    "batch resume": ("kvm-manager batch resume --tag batch-jobs",),
    "batch snapshot": ("kvm-manager batch snapshot --tag prod --snapshot-name before-upgrade",),
    "batch delete": ("kvm-manager batch delete web1-test web2-test --remove-volumes",),
    "clone create": ("kvm-manager clone create web1 web1-test --start",),
    "config show": ("kvm-manager config show",),
    # Export and import.
    "export xml": ("kvm-manager export xml web1 --output web1.xml",),
    "export import": ("kvm-manager export import web1.xml --name web1-copy --new-identity",),
    "export bundle": ("kvm-manager export bundle web1 --output web1.tar",),
    "export import-bundle": (
        "kvm-manager export import-bundle web1.tar --pool default --name web1-copy",
    ),
    # Hosts and host devices.
    "host list": ("kvm-manager host list",),
    "host add": ("kvm-manager host add lab qemu+ssh://root@lab.example/system",),
    "host show": ("kvm-manager host show lab",),
    "host remove": ("kvm-manager host remove lab",),
    "hostdev list": ("kvm-manager hostdev list --kind pci --host lab",),
    "hostdev attach": ("kvm-manager hostdev attach web1 pci_0000_03_00_0",),
    "hostdev detach": ("kvm-manager hostdev detach web1 pci_0000_03_00_0",),
    # Metrics.
    "metrics host": ("kvm-manager metrics host --sort cpu --limit 10",),
    "metrics vm": ("kvm-manager metrics vm web1 --host lab",),
    "metrics history": ("kvm-manager metrics history web1 --last 3600 --field cpu_pct",),
    "metrics collectors": ("kvm-manager metrics collectors",),
    # Migration.
    "migrate check": ("kvm-manager migrate check web1 lab --copy-storage",),
    "migrate start": ("kvm-manager migrate start web1 lab --copy-storage --wait",),
    # Networks.
    "net list": ("kvm-manager net list",),
    "net show": ("kvm-manager net show default",),
    "net create": (
        "kvm-manager net create lan --forward nat --address 192.168.50.1 --prefix 24 "
        "--dhcp-start 192.168.50.100 --dhcp-end 192.168.50.200 --start --autostart",
    ),
    "net start": ("kvm-manager net start lan",),
    "net stop": ("kvm-manager net stop lan",),
    "net autostart": ("kvm-manager net autostart lan", "kvm-manager net autostart lan --off"),
    "net delete": ("kvm-manager net delete lan",),
    "net leases": ("kvm-manager net leases default",),
    # Storage pools.
    "pool list": ("kvm-manager pool list",),
    "pool show": ("kvm-manager pool show default",),
    "pool create": (
        "kvm-manager pool create images --type dir --target /srv/images --build --start "
        "--autostart",
    ),
    "pool start": ("kvm-manager pool start images",),
    "pool stop": ("kvm-manager pool stop images",),
    "pool build": ("kvm-manager pool build images",),
    "pool refresh": ("kvm-manager pool refresh images",),
    "pool autostart": ("kvm-manager pool autostart images",),
    "pool delete": ("kvm-manager pool delete images",),
    # passt port forwards.
    "portfwd list": ("kvm-manager portfwd list web1",),
    "portfwd add": ("kvm-manager portfwd add web1 tcp 2222 22",),
    "portfwd rm": ("kvm-manager portfwd rm web1 tcp 2222",),
    # Schedules.
    "schedule list": ("kvm-manager schedule list",),
    "schedule add": (
        "kvm-manager schedule add night-stop shutdown --tag dev --kind daily --at 22:00 "
        "--tz Europe/Berlin",
        "kvm-manager schedule add sunday-snap snapshot web1 --kind cron --cron '0 3 * * 0'",
    ),
    "schedule show": ("kvm-manager schedule show night-stop",),
    "schedule runs": ("kvm-manager schedule runs night-stop --limit 10",),
    "schedule enable": ("kvm-manager schedule enable night-stop",),
    "schedule disable": ("kvm-manager schedule disable night-stop",),
    "schedule remove": ("kvm-manager schedule remove night-stop",),
    # Snapshots.
    "snapshot list": ("kvm-manager snapshot list web1 --tree",),
    "snapshot create": ("kvm-manager snapshot create web1 before-upgrade --quiesce require",),
    "snapshot revert": ("kvm-manager snapshot revert web1 before-upgrade --start",),
    "snapshot delete": ("kvm-manager snapshot delete web1 before-upgrade",),
    "snapshot quiesce-policy": ("kvm-manager snapshot quiesce-policy web1 never",),
    # SPICE.
    "spice set": ("kvm-manager spice set web1 --spice",),
    "spice vv": ("kvm-manager spice vv web1 --output web1.vv",),
    # Templates.
    "template list": ("kvm-manager template list",),
    "template mark": ("kvm-manager template mark debian12-base",),
    "template unmark": ("kvm-manager template unmark debian12-base",),
    "template deploy": ("kvm-manager template deploy debian12-base web3 --start",),
    # Users and tokens.
    "token create": ("kvm-manager token create ci --expires-days 30",),
    "token list": ("kvm-manager token list",),
    "token revoke": ("kvm-manager token revoke 4",),
    "user add": ("kvm-manager user add alice --role operator",),
    "user passwd": ("kvm-manager user passwd alice",),
    "user list": ("kvm-manager user list",),
    "user remove": ("kvm-manager user remove alice --yes",),
    "user reset-admin": ("kvm-manager user reset-admin --local",),
    # VMs.
    "vm list": ("kvm-manager vm list", "kvm-manager vm list --state running --tag web --json"),
    "vm show": ("kvm-manager vm show web1",),
    "vm xml": ("kvm-manager vm xml web1 --inactive",),
    "vm create": (
        "kvm-manager vm create web1 --memory 2048 --disk default:20 --network default "
        "--iso default/debian.iso",
        "kvm-manager vm create db1 --vcpus 2 --max-vcpus 8 --memory 4096 --max-memory 16384 "
        "--disk default:40 --start",
    ),
    "vm start": ("kvm-manager vm start web1",),
    "vm shutdown": ("kvm-manager vm shutdown web1 --mode acpi",),
    "vm destroy": ("kvm-manager vm destroy web1",),
    "vm reboot": ("kvm-manager vm reboot web1",),
    "vm reset": ("kvm-manager vm reset web1",),
    "vm suspend": ("kvm-manager vm suspend web1",),
    "vm resume": ("kvm-manager vm resume web1",),
    "vm delete": ("kvm-manager vm delete web1-test --remove-volumes",),
    "vm edit": (
        "kvm-manager vm edit web1 --vcpus 4 --memory 4096",
        "kvm-manager vm edit web1 --max-vcpus 8 --max-memory 16384",
    ),
    "vm attach-disk": ("kvm-manager vm attach-disk web1 default:10",),
    "vm detach-disk": ("kvm-manager vm detach-disk web1 vdb",),
    "vm attach-nic": (
        "kvm-manager vm attach-nic web1 --network default",
        "kvm-manager vm attach-nic web1 --user",
    ),
    "vm detach-nic": ("kvm-manager vm detach-nic web1 52:54:00:12:34:56",),
    "vm install-agent": (
        "kvm-manager vm install-agent web1",
        "kvm-manager vm install-agent web1 --replace-cd",
    ),
    "vm eject-agent": ("kvm-manager vm eject-agent web1",),
    "vm create-from-image": (
        "kvm-manager vm create-from-image web2 --image default/debian-12.qcow2 --size 20G "
        "--user deb --ssh-key ~/.ssh/id_ed25519.pub --start",
    ),
    "vm media insert": ("kvm-manager vm media insert web1 default/debian.iso",),
    "vm media eject": ("kvm-manager vm media eject web1",),
    # Volumes.
    "vol list": ("kvm-manager vol list default",),
    "vol show": ("kvm-manager vol show default web1.qcow2",),
    "vol create": ("kvm-manager vol create default data.qcow2 --capacity 20G --format qcow2",),
    "vol delete": ("kvm-manager vol delete default data.qcow2",),
    "vol resize": ("kvm-manager vol resize default data.qcow2 40G",),
    "vol clone": ("kvm-manager vol clone default web1.qcow2 web1-copy.qcow2",),
    "vol upload": ("kvm-manager vol upload default disk.qcow2 ./disk.qcow2",),
    "vol download": ("kvm-manager vol download default disk.qcow2 ./disk.qcow2",),
}


def epilog(path: str) -> str | None:
    """The `--help` text block of the examples of command `path` (None: it has none).
    Paragraphs (blank-line separated) keep one example per line in rich help."""
    examples = EXAMPLES.get(path)
    if not examples:
        return None
    return "\n\n".join(("Examples:" if len(examples) > 1 else "Example:", *examples))
