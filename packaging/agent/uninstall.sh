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

[ "$(id -u)" = 0 ] || die 3 "run me as root, e.g.: sudo sh $0"

ROOTARG=""
[ -n "$ROOT" ] && ROOTARG="--root=$ROOT"

stop_service() {
	if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now "$NAME.service" || true
	elif command -v rc-update >/dev/null 2>&1 && [ -f "$ROOT/etc/init.d/$NAME" ]; then
		rc-service "$NAME" stop || true
		rc-update del "$NAME" default || true
	elif [ -x "$ROOT/etc/init.d/$NAME" ]; then
		"$ROOT/etc/init.d/$NAME" stop || true
		if command -v update-rc.d >/dev/null 2>&1; then
			update-rc.d -f "$NAME" remove || true
		elif command -v chkconfig >/dev/null 2>&1; then
			chkconfig --del "$NAME" || true
		fi
	fi
}

# A package install is removed by its own tool (its maintainer scripts stop the service).
if command -v dpkg-query >/dev/null 2>&1 &&
	dpkg-query $ROOTARG -W -f='${Status}' "$NAME" 2>/dev/null | grep -q 'install ok installed'; then
	dpkg $ROOTARG -r "$NAME" || die 6 "dpkg -r $NAME failed"
	say "removed the $NAME package; an edited $CONFDIR/config.json is kept (dpkg --purge $NAME removes it)"
	exit 0
fi
if command -v rpm >/dev/null 2>&1 && rpm $ROOTARG -q "$NAME" >/dev/null 2>&1; then
	rpm $ROOTARG -e "$NAME" || die 6 "rpm -e $NAME failed"
	say "removed the $NAME package; an edited config is kept as $CONFDIR/config.json.rpmsave"
	exit 0
fi
if command -v apk >/dev/null 2>&1 && apk $ROOTARG info -e "$NAME" >/dev/null 2>&1; then
	apk $ROOTARG del "$NAME" || die 6 "apk del $NAME failed"
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
if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
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
say "removed $NAME"
exit 0
