#!/bin/sh
# Remove the KVM Manager guest agent that install.sh installed.
#
#   sh /media/cdrom/uninstall.sh
#
# Removes the package (the package tool keeps an edited config) or, for a plain
# install, every file listed in /var/lib/kvmmanager-agent/installed.list; the config is
# removed only when it is still the one install.sh wrote. KVMM_ROOT as in install.sh.
#
# Exit codes: 0 done (or nothing installed), 2 bad usage, 3 not root, 6 removing failed.

set -u

ROOT=${KVMM_ROOT:-}
NAME=kvmmanager-agent
CONFDIR=/etc/kvmmanager-agent
STATEDIR=/var/lib/kvmmanager-agent

say() { printf '%s\n' "kvmmanager-agent: $*"; }
# A real program on PATH (busybox sh would otherwise run its own dpkg/rpm/id applets).
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

case "${1:-}" in
"") ;;
-h | --help)
	sed -n '2,9p' "$0"
	exit 0
	;;
*) die 2 "unknown option $1" ;;
esac

ID_CMD=$(find_tool id) || ID_CMD=id
[ "$("$ID_CMD" -u)" = 0 ] || die 3 "run me as root, e.g.: sudo sh $0"

ROOTARG=""
[ -n "$ROOT" ] && ROOTARG="--root=$ROOT"

SYSTEMCTL=$(find_tool systemctl) || SYSTEMCTL=""
stop_service() {
	if [ -d "$ROOT/run/systemd/system" ] && [ -n "$SYSTEMCTL" ]; then
		"$SYSTEMCTL" disable --now "$NAME.service" || true
	elif t=$(find_tool rc-update) && [ -f "$ROOT/etc/init.d/$NAME" ]; then
		"$(find_tool rc-service || echo rc-service)" "$NAME" stop || true
		"$t" del "$NAME" default || true
	elif [ -x "$ROOT/etc/init.d/$NAME" ]; then
		if t=$(find_tool service); then
			"$t" "$NAME" stop || true
		else
			"$ROOT/etc/init.d/$NAME" stop || true
		fi
		if t=$(find_tool update-rc.d); then
			"$t" -f "$NAME" remove || true
		elif t=$(find_tool chkconfig); then
			"$t" --del "$NAME" || true
		fi
	fi
}

# A package install is removed by its own tool (its maintainer scripts stop the service).
if DPKG_QUERY=$(find_tool dpkg-query) &&
	"$DPKG_QUERY" $ROOTARG -W -f='${Status}' "$NAME" 2>/dev/null | grep -q 'install ok installed'; then
	"$(find_tool dpkg || echo dpkg)" $ROOTARG -r "$NAME" || die 6 "dpkg -r $NAME failed"
	say "removed the $NAME package; an edited $CONFDIR/config.json is kept (dpkg --purge $NAME removes it)"
	exit 0
fi
if RPM=$(find_tool rpm) && "$RPM" $ROOTARG -q "$NAME" >/dev/null 2>&1; then
	"$RPM" $ROOTARG -e "$NAME" || die 6 "rpm -e $NAME failed"
	say "removed the $NAME package; an edited config is kept as $CONFDIR/config.json.rpmsave"
	exit 0
fi
if APK=$(find_tool apk) && "$APK" $ROOTARG info -e "$NAME" >/dev/null 2>&1; then
	"$APK" $ROOTARG del "$NAME" || die 6 "apk del $NAME failed"
	say "removed the $NAME package"
	exit 0
fi

LIST="$ROOT$STATEDIR/installed.list"
if [ ! -f "$LIST" ]; then
	say "nothing to remove: $NAME is not installed"
	exit 0
fi

stop_service
while IFS= read -r path; do
	case "$path" in
	/*) rm -f "$ROOT$path" || die 6 "cannot remove $path" ;;
	esac
done <"$LIST"
rmdir "$ROOT/usr/lib/$NAME" 2>/dev/null || true
if [ -d "$ROOT/run/systemd/system" ] && [ -n "$SYSTEMCTL" ]; then
	"$SYSTEMCTL" daemon-reload || true
fi

CONF="$ROOT$CONFDIR/config.json"
if [ -f "$CONF" ]; then
	want=$(cat "$ROOT$STATEDIR/config.sha256" 2>/dev/null || true)
	have=$(sha256sum "$CONF" 2>/dev/null | cut -d' ' -f1)
	if [ -n "$want" ] && [ "$want" = "$have" ]; then
		rm -f "$CONF"
		rmdir "$ROOT$CONFDIR" 2>/dev/null || true
	else
		say "kept $CONFDIR/config.json because it was modified; delete it by hand if unwanted"
	fi
fi
rm -rf "$ROOT$STATEDIR"
# The bytecode the agent cached for itself on first start (made again when needed).
rm -rf "$ROOT/var/cache/$NAME"
say "removed $NAME"
exit 0
