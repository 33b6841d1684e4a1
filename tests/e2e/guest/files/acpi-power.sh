#!/bin/sh
# The ACPI power button (libvirt's shutdown/reboot in ACPI mode): power off cleanly.
# A reboot request is the same button, and libvirt starts the guest again itself.
. /usr/lib/kvmm-e2e/lib.sh
log "ACPI power button"
poweroff
