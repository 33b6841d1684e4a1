#!/bin/sh
# Install (or upgrade) the KVM Manager guest agent from the mounted agent CD.
#
#   sh /media/cdrom/install.sh [--plain] [--no-start] [--dry-run]
#
# POSIX sh (dash, busybox ash). Verifies SHA256SUMS, then installs the native package
# when the distribution's package tool exists, else copies the zipapp and a service
# file ("plain" install). Keeps an existing config. Running it again upgrades or does
# nothing. --dry-run says what it would install and run, and changes nothing.
# KVMM_ROOT installs into another root (tests; images being prepared).
#
# Exit codes: 0 done, 2 bad usage, 3 not root, 4 checksum mismatch or missing file,
# 5 python3 missing or too old, 6 installing failed, 7 the service did not start.

set -u

ROOT=${KVMM_ROOT:-}
SRC=${KVMM_SRC:-$(cd "$(dirname "$0")" && pwd)}
NAME=kvmmanager-agent
PORT_NAME=org.kvmmanager.agent.0
LIBDIR=/usr/lib/kvmmanager-agent
CONFDIR=/etc/kvmmanager-agent
STATEDIR=/var/lib/kvmmanager-agent
PLAIN=0
START=1
DRY=0

say() { printf '%s\n' "kvmmanager-agent: $*"; }
# Every command that changes the system goes through act: --dry-run only names it.
act() {
	if [ "$DRY" = 1 ]; then
		say "would run: $*"
		return 0
	fi
	"$@"
}
# The absolute path of a real program on PATH. `command -v` is not enough: busybox sh
# answers for its own applets (dpkg, rpm, id...) even when no such program exists.
find_tool() {
	_ifs=$IFS
	IFS=:
	for _d in $PATH; do
		if [ -n "$_d" ] && [ -f "$_d/$1" ] && [ -x "$_d/$1" ]; then
			IFS=$_ifs
			echo "$_d/$1"
			return 0
		fi
	done
	IFS=$_ifs
	return 1
}
die() {
	code=$1
	shift
	printf '%s\n' "kvmmanager-agent: error: $*" >&2
	exit "$code"
}

for arg in "$@"; do
	case "$arg" in
	--plain) PLAIN=1 ;;
	--no-start) START=0 ;;
	--dry-run) DRY=1 ;;
	-h | --help)
		# The header comment above, without its comment marks.
		sed -n -e '2,14s/^# //p' -e '2,14s/^#$//p' "$0"
		exit 0
		;;
	*) die 2 "unknown option $arg (use --plain, --no-start, --dry-run or --help)" ;;
	esac
done

ID_CMD=$(find_tool id) || ID_CMD=id
[ "$DRY" = 1 ] || [ "$("$ID_CMD" -u)" = 0 ] || die 3 "run me as root, e.g.: sudo sh $SRC/install.sh"

[ -f "$SRC/VERSION" ] || die 4 "$SRC/VERSION is missing: is the agent CD mounted?"
VERSION=$(cat "$SRC/VERSION")

# --- 1. checksums, before anything is touched -------------------------------------
verify_sums() {
	[ -f "$SRC/SHA256SUMS" ] || die 4 "$SRC/SHA256SUMS is missing"
	if command -v sha256sum >/dev/null 2>&1; then
		(cd "$SRC" && sha256sum -c SHA256SUMS >/dev/null 2>&1) && return 0
		bad=$(cd "$SRC" && sha256sum -c SHA256SUMS 2>/dev/null | grep -v ': OK$' | head -n 3)
	elif _py=$(find_tool python3); then
		bad=$(cd "$SRC" && "$_py" - <<'EOF'
import hashlib
import sys
bad = 0
for line in open("SHA256SUMS"):
    digest, name = line.rstrip("\n").split("  ", 1)
    try:
        data = open(name, "rb").read()
    except OSError:
        print(name + ": missing")
        bad = 1
        continue
    if hashlib.sha256(data).hexdigest() != digest:
        print(name + ": FAILED")
        bad = 1
sys.exit(bad)
EOF
) && return 0
	else
		die 4 "cannot verify SHA256SUMS: neither sha256sum nor python3 is installed"
	fi
	die 4 "checksum mismatch, the CD is damaged or was modified: $bad"
}
verify_sums

# --- 2. distribution family and init system ---------------------------------------
ID="" ID_LIKE=""
if [ -f "$ROOT/etc/os-release" ]; then
	ID=$(sed -n 's/^ID=//p' "$ROOT/etc/os-release" | tr -d '"')
	ID_LIKE=$(sed -n 's/^ID_LIKE=//p' "$ROOT/etc/os-release" | tr -d '"')
fi
FAMILY=plain
for word in $ID $ID_LIKE; do
	case "$word" in
	debian | ubuntu) FAMILY=debian ;;
	rhel | fedora | centos | rocky | almalinux) FAMILY=rhel ;;
	alpine) FAMILY=alpine ;;
	suse | opensuse | opensuse-leap | opensuse-tumbleweed | sles) FAMILY=suse ;;
	arch | archlinux | manjaro) FAMILY=arch ;;
	*) continue ;;
	esac
	break
done

if [ -d "$ROOT/run/systemd/system" ]; then
	INIT=systemd
elif [ -x "$ROOT/sbin/openrc-run" ] || [ -x "$ROOT/sbin/openrc" ]; then
	INIT=openrc
elif [ -e "$ROOT/lib/systemd/systemd" ] || [ -e "$ROOT/usr/lib/systemd/systemd" ]; then
	# systemd installed but not running: an image build or a chroot. Enabled for the
	# first boot, nothing started here (it would run in the build's namespaces).
	INIT=systemd-offline
elif [ -d "$ROOT/etc/init.d" ] && { [ -d "$ROOT/etc/rc2.d" ] || [ -d "$ROOT/etc/rc.d" ] ||
	find_tool update-rc.d >/dev/null || find_tool chkconfig >/dev/null; }; then
	# Runlevel directories or their tools: a real sysvinit. A bare /etc/init.d (busybox
	# init's rcS) is not one: there the agent is started by whatever supervises it.
	INIT=sysvinit
else
	INIT=none
fi
INIT_LABEL=$INIT
[ "$INIT" = systemd-offline ] && INIT_LABEL="systemd (not running)"
say "distribution family: $FAMILY, init: $INIT_LABEL, version on CD: $VERSION"

# --- 3. python3 >= 3.8 --------------------------------------------------------------
python_hint() {
	case "$FAMILY" in
	debian) echo "apt-get install python3" ;;
	rhel) echo "dnf install python3" ;;
	alpine) echo "apk add python3" ;;
	suse) echo "zypper install python3" ;;
	arch) echo "pacman -S python" ;;
	*) echo "install Python 3.8 or newer with your distribution's package tool" ;;
	esac
}
PYTHON=$(find_tool python3) ||
	die 5 "python3 is not installed; the agent needs Python 3.8 or newer: $(python_hint)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' ||
	die 5 "python3 is older than 3.8 ($("$PYTHON" -V 2>&1)); upgrade it: $(python_hint)"

# --- 4. install -----------------------------------------------------------------------
pkg_file() { # the one package of a kind on the CD
	for f in "$SRC"/packages/*."$1"; do
		[ -f "$f" ] && echo "$f" && return 0
	done
	return 1
}

METHOD=plain
if [ "$PLAIN" = 0 ]; then
	case "$FAMILY" in
	debian) DPKG=$(find_tool dpkg) && METHOD=deb ;;
	rhel | suse) RPM=$(find_tool rpm) && METHOD=rpm ;;
	alpine) APK=$(find_tool apk) && METHOD=apk ;;
	esac
fi

ROOTARG_DPKG="" ROOTARG_RPM="" ROOTARG_APK=""
if [ -n "$ROOT" ]; then
	ROOTARG_DPKG="--root=$ROOT"
	ROOTARG_RPM="--root=$ROOT"
	ROOTARG_APK="--root=$ROOT"
fi

CHANGED=1
case "$METHOD" in
deb)
	DPKG_QUERY=$(find_tool dpkg-query) || DPKG_QUERY=false
	have=$("$DPKG_QUERY" $ROOTARG_DPKG -W -f='${Version}' "$NAME" 2>/dev/null || true)
	if [ "$have" = "$VERSION-1" ]; then
		CHANGED=0
		say "package $NAME $have is already installed"
	else
		f=$(pkg_file deb) || die 4 "no .deb on the CD"
		act "$DPKG" $ROOTARG_DPKG -i "$f" || die 6 "dpkg -i $f failed"
	fi
	;;
rpm)
	if "$RPM" $ROOTARG_RPM -q "$NAME-$VERSION-1" >/dev/null 2>&1; then
		CHANGED=0
		say "package $NAME-$VERSION-1 is already installed"
	else
		f=$(pkg_file rpm) || die 4 "no .rpm on the CD"
		act "$RPM" $ROOTARG_RPM -U --replacepkgs "$f" || die 6 "rpm -U $f failed"
	fi
	;;
apk)
	f=$(pkg_file apk) || die 4 "no .apk on the CD"
	act "$APK" $ROOTARG_APK add --allow-untrusted --no-network "$f" || die 6 "apk add $f failed"
	;;
plain)
	if [ "$DRY" = 1 ]; then
		say "would copy $NAME.pyz to $LIBDIR, the $INIT service files and (if none exists) config.json to $CONFDIR"
	else
		LIST="$ROOT$STATEDIR/installed.list"
		same=0
		if [ -f "$ROOT$LIBDIR/$NAME.pyz" ] && cmp -s "$SRC/$NAME.pyz" "$ROOT$LIBDIR/$NAME.pyz"; then
			same=1
		fi
		mkdir -p "$ROOT$LIBDIR" "$ROOT$CONFDIR" "$ROOT$STATEDIR" || die 6 "cannot create directories"
		: >"$LIST.new" || die 6 "cannot write $LIST"
		put() { # src dst mode
			cp "$1" "$ROOT$2.kvmm-new" && chmod "$3" "$ROOT$2.kvmm-new" &&
				mv "$ROOT$2.kvmm-new" "$ROOT$2" || die 6 "cannot install $2"
			echo "$2" >>"$LIST.new"
		}
		put "$SRC/$NAME.pyz" "$LIBDIR/$NAME.pyz" 0644
		case "$INIT" in
		systemd | systemd-offline)
			mkdir -p "$ROOT/etc/systemd/system" "$ROOT/etc/udev/rules.d"
			put "$SRC/service/$NAME.service" "/etc/systemd/system/$NAME.service" 0644
			put "$SRC/service/60-$NAME.rules" "/etc/udev/rules.d/60-$NAME.rules" 0644
			;;
		openrc)
			put "$SRC/service/$NAME.openrc" "/etc/init.d/$NAME" 0755
			;;
		sysvinit)
			put "$SRC/service/$NAME.sysv" "/etc/init.d/$NAME" 0755
			;;
		esac
		if [ -f "$ROOT$CONFDIR/config.json" ]; then
			say "keeping the existing $CONFDIR/config.json"
		else
			cp "$SRC/config.json" "$ROOT$CONFDIR/config.json" || die 6 "cannot write the config"
			chmod 0644 "$ROOT$CONFDIR/config.json"
			# Remember the pristine config so uninstall can tell whether it was edited.
			sha256sum "$ROOT$CONFDIR/config.json" 2>/dev/null | cut -d' ' -f1 >"$ROOT$STATEDIR/config.sha256"
		fi
		echo "$VERSION" >"$ROOT$STATEDIR/VERSION"
		mv "$LIST.new" "$LIST"
		[ "$same" = 1 ] && CHANGED=0
	fi
	;;
esac
if [ "$DRY" = 1 ]; then
	say "would install $NAME $VERSION ($METHOD install)"
elif [ "$CHANGED" = 1 ]; then
	say "installed $NAME $VERSION ($METHOD install)"
fi
# The same version already installed: its service stays as the admin left it. Enabling it
# again here undid an admin's `systemctl disable` on every re-run.
if [ "$CHANGED" = 0 ] && [ "$START" = 1 ]; then
	say "its service is left as it is (enabled or disabled, started or not)"
	START=0
fi

# --- 5. enable and start ----------------------------------------------------------------
STARTED=unknown
SYSTEMCTL=$(find_tool systemctl) || SYSTEMCTL=""
RC_UPDATE=$(find_tool rc-update) || RC_UPDATE=""
RC_SERVICE=$(find_tool rc-service) || RC_SERVICE=""
[ "$INIT" = systemd ] && [ -z "$SYSTEMCTL" ] && INIT=none
[ "$INIT" = systemd-offline ] && [ -z "$SYSTEMCTL" ] && INIT=none
[ "$INIT" = openrc ] && { [ -z "$RC_UPDATE" ] || [ -z "$RC_SERVICE" ]; } && INIT=none
if [ "$START" = 1 ]; then
	case "$INIT" in
	systemd)
		act "$SYSTEMCTL" daemon-reload
		if UDEVADM=$(find_tool udevadm); then act "$UDEVADM" control --reload; fi
		act "$SYSTEMCTL" enable "$NAME.service" || die 7 "systemctl enable $NAME failed"
		if [ -e "$ROOT/dev/virtio-ports/$PORT_NAME" ]; then
			if [ "$CHANGED" = 1 ]; then
				act "$SYSTEMCTL" restart "$NAME.service" || die 7 "systemctl restart $NAME failed"
			else
				act "$SYSTEMCTL" start "$NAME.service" || die 7 "systemctl start $NAME failed"
			fi
			STARTED=yes
		fi
		;;
	systemd-offline)
		# systemctl enable works without a running systemd (it writes the links).
		act "$SYSTEMCTL" enable "$NAME.service" || die 7 "systemctl enable $NAME failed"
		say "systemd is installed but not running (an image build?): $NAME is enabled and starts at the next boot"
		;;
	openrc)
		act "$RC_UPDATE" add "$NAME" default || die 7 "rc-update add $NAME failed"
		if [ "$CHANGED" = 1 ]; then
			act "$RC_SERVICE" "$NAME" restart || die 7 "rc-service $NAME restart failed"
		else
			act "$RC_SERVICE" "$NAME" start || die 7 "rc-service $NAME start failed"
		fi
		STARTED=yes
		;;
	sysvinit)
		if t=$(find_tool update-rc.d); then
			act "$t" "$NAME" defaults
		elif t=$(find_tool chkconfig); then
			act "$t" --add "$NAME"
		fi
		if t=$(find_tool service); then
			act "$t" "$NAME" restart || die 7 "service $NAME restart failed"
		else
			act "$ROOT/etc/init.d/$NAME" restart || die 7 "/etc/init.d/$NAME restart failed"
		fi
		STARTED=yes
		;;
	none)
		say "no init system found: start the agent with"
		say "  python3 $LIBDIR/$NAME.pyz --config $CONFDIR/config.json"
		;;
	esac
fi

# --- 6. report ------------------------------------------------------------------------------
if [ -e "$ROOT/dev/virtio-ports/$PORT_NAME" ]; then
	say "port device /dev/virtio-ports/$PORT_NAME: present"
else
	say "port device /dev/virtio-ports/$PORT_NAME: MISSING"
	say "  the VM has no agent channel yet; on the host run: kvm-manager vm install-agent VM"
	say "  (the agent starts by itself once the channel appears, after the next boot at worst)"
fi
if [ "$DRY" = 1 ]; then
	say "dry run: nothing was changed"
	exit 0
fi
[ "$STARTED" = yes ] && say "service $NAME enabled and started"
[ "$CHANGED" = 0 ] && say "nothing to do: $VERSION was already installed"
exit 0
