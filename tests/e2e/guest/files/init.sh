#!/bin/sh
# PID 1 of the kvmm-e2e test guest (busybox sh). No udev, no init system, no network
# services: it mounts the basics, loads the modules the builder listed, links
# /dev/virtio-ports/*, configures eth0 and the hostname from the kernel command line, and
# then acts as the administrator would (mounts the CD-ROM and runs install.sh from it),
# handing the installed agent to a restart-on-exit supervisor.
#
# Kernel command line (all optional):
#   kvmm.mode=agent|qga|hostile   what runs on the ports (default agent)
#   kvmm.hostname=NAME            the guest's hostname
#   kvmm.ip=A.B.C.D/NN            static IPv4 address of eth0
#   kvmm.echo=PORTNAME            also run a raw line-echo server on that port (benchmarks)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/virtio-ports
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/kvmm-e2e /var/log
ln -sf /run /var/run
exec </dev/console >/dev/console 2>&1

. /usr/lib/kvmm-e2e/lib.sh
log "init start"

MODE=agent; HOST=kvmm-e2e-guest; IP=; ECHO_PORT=
for word in $(cat /proc/cmdline); do
  case "$word" in
    kvmm.mode=*) MODE=${word#*=} ;;
    kvmm.hostname=*) HOST=${word#*=} ;;
    kvmm.ip=*) IP=${word#*=} ;;
    kvmm.echo=*) ECHO_PORT=${word#*=} ;;
  esac
done

# A PID 1 that is not busybox init still receives busybox poweroff/reboot as signals
# (USR2 = power off, TERM = reboot, USR1 = halt): honour them so the agent's
# shutdown/reboot and the manager's ACPI-less "shutdown" paths really end the domain.
stop_all() {
  log "$1 requested"
  for f in /run/kvmm-e2e/*.supervisor.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  for f in /run/kvmm-e2e/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sync
  umount /data 2>/dev/null
}
trap 'stop_all poweroff; poweroff -f' USR2
trap 'stop_all halt; poweroff -f' USR1
trap 'stop_all reboot; reboot -f' TERM INT

while read -r mod; do
  insmod "/lib/modules/$(uname -r)/$mod" 2>/dev/null || log "insmod $mod failed"
done </etc/kvmm-e2e/modules.load
log "modules loaded"

# busybox acpid runs /etc/acpi/PWRF/00000080 when the (virtual) power button is pressed.
acpid -c /etc/acpi -l /dev/null && log "acpid started"

hostname "$HOST"
echo "$HOST" >/etc/hostname
ip link set lo up
if [ -n "$IP" ]; then
  ip addr add "$IP" dev eth0 && ip link set eth0 up && log "eth0 $IP"
fi

# virtio-serial ports: devtmpfs makes /dev/vportNpM; the names live in sysfs.
link_ports() {
  for p in /sys/class/virtio-ports/*; do
    [ -e "$p/name" ] || continue
    n=$(cat "$p/name")
    [ -n "$n" ] && ln -sf "/dev/${p##*/}" "/dev/virtio-ports/$n"
  done
}
wait_for() {  # wait_for PATH TENTHS: bounded wait for a device to appear
  i=0
  while [ ! -e "$1" ] && [ "$i" -lt "$2" ]; do link_ports; usleep 100000; i=$((i + 1)); done
  [ -e "$1" ]
}
link_ports
log "ports: $(ls /dev/virtio-ports | tr '\n' ' ')"

# The data disk (first virtio disk): an ext2 file system mounted at /data, made on the
# first boot, so disk usage, fsfreeze and file tests have a real block-device fs.
mkdir -p /data
if wait_for /dev/vda 20; then
  mount -t ext4 /dev/vda /data 2>/dev/null || { mke2fs -q /dev/vda >/dev/null 2>&1 && mount -t ext4 /dev/vda /data; }
  log "data disk mounted: $(df -k /data | tail -1)"
fi

python3 /usr/lib/kvmm-e2e/utmp.py root ttyS0 || log "utmp record failed"

[ -n "$ECHO_PORT" ] && wait_for "/dev/virtio-ports/$ECHO_PORT" 50 \
  && supervise echo python3 /usr/lib/kvmm-e2e/echo.py "/dev/virtio-ports/$ECHO_PORT"

case "$MODE" in
  agent) /usr/lib/kvmm-e2e/admin-install.sh ;;
  qga)
    mkdir -p /run/qga
    wait_for /dev/virtio-ports/org.qemu.guest_agent.0 50
    supervise qemu-ga /usr/sbin/qemu-ga -m virtio-serial \
      -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/qga
    ;;
  hostile)
    wait_for /dev/virtio-ports/org.kvmmanager.agent.0 50
    supervise hostile python3 /usr/lib/kvmm-e2e/hostile.py /dev/virtio-ports/org.kvmmanager.agent.0
    ;;
  *) log "unknown kvmm.mode=$MODE" ;;
esac
log "init done mode=$MODE"

# PID 1 must never exit; `wait` returns when a trapped signal arrives.
while :; do
  sleep 3600 &
  wait $!
done
