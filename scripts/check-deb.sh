#!/usr/bin/env bash
# Installs an edgeleaf .deb on this machine with dpkg and checks what it installed,
# without running systemd (CI has none): files and modes, the system user, the state
# directory, the units (systemd-analyze verify), the config (edgeleaf node --check,
# as the service user), then that remove keeps config and state and purge keeps the
# state. Leaves the machine as it found it. Needs root (or sudo).
#
#   scripts/check-deb.sh target/debian/edgeleaf_<version>_<arch>.deb
set -euo pipefail
deb="$(realpath "${1:?usage: scripts/check-deb.sh DEB}")"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

if dpkg -s edgeleaf >/dev/null 2>&1; then
  echo "check-deb: edgeleaf is already installed here; not touching it" >&2; exit 2
fi
had_user=0; getent passwd edgeleaf >/dev/null && had_user=1
had_state=0; [ -e /var/lib/edgeleaf ] && had_state=1
cleanup() {
  $SUDO dpkg -P edgeleaf >/dev/null 2>&1 || true
  [ "$had_state" = 1 ] || $SUDO rm -rf /var/lib/edgeleaf
  if [ "$had_user" = 0 ] && getent passwd edgeleaf >/dev/null; then
    $SUDO userdel edgeleaf 2>/dev/null || true
    $SUDO groupdel edgeleaf 2>/dev/null || true
  fi
}
trap cleanup EXIT

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
mode_owner() { stat -c '%a %U:%G' "$1"; }
expect() { # PATH "MODE USER:GROUP"
  local got; got="$(mode_owner "$1")" || fail "$1 missing"
  [ "$got" = "$2" ] || fail "$1 is $got, want $2"
  echo "ok: $1 $got"
}

command -v adduser >/dev/null || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adduser >/dev/null
$SUDO dpkg -i "$deb"

expect /usr/bin/edgeleaf "755 root:root"
expect /lib/systemd/system/edgeleaf.service "644 root:root"
expect /lib/systemd/system/edgeleaf-leaf.service "644 root:root"
expect /etc/edgeleaf "750 root:edgeleaf"
expect /etc/edgeleaf/edgeleaf.toml "640 root:edgeleaf"
expect /etc/edgeleaf/leaf.conf "640 root:edgeleaf"
expect /var/lib/edgeleaf "700 edgeleaf:edgeleaf"
uid="$(id -u edgeleaf)"
[ "$uid" -lt 1000 ] || fail "edgeleaf is not a system user (uid $uid)"
shell="$(getent passwd edgeleaf | cut -d: -f7)"
case "$shell" in */nologin|*/false) ;; *) fail "edgeleaf has a login shell: $shell" ;; esac
echo "ok: system user edgeleaf (uid $uid, shell $shell)"

/usr/bin/edgeleaf --version
# The config as the service reads it: as its user, with the unit's environment.
$SUDO runuser -u edgeleaf -- env EDGELEAF_NODE_STATE_DIR=/var/lib/edgeleaf \
  /usr/bin/edgeleaf node --config /etc/edgeleaf/edgeleaf.toml --check
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/edgeleaf.service /lib/systemd/system/edgeleaf-leaf.service
  echo "ok: systemd-analyze verify"
  systemd-analyze security --offline=yes /lib/systemd/system/edgeleaf.service | tail -1
else
  echo "check-deb: systemd-analyze not installed; units not verified" >&2
fi
if command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then
  "$(command -v nats-server || echo /usr/sbin/nats-server)" -c /etc/edgeleaf/leaf.conf -t
fi

$SUDO touch /var/lib/edgeleaf/marker
$SUDO dpkg -r edgeleaf >/dev/null
[ ! -e /usr/bin/edgeleaf ] || fail "remove left /usr/bin/edgeleaf"
[ -f /etc/edgeleaf/edgeleaf.toml ] || fail "remove dropped the config"
[ -f /var/lib/edgeleaf/marker ] || fail "remove dropped the state"
echo "ok: remove kept config and state"
$SUDO dpkg -P edgeleaf >/dev/null
[ ! -e /etc/edgeleaf/edgeleaf.toml ] || fail "purge kept the config"
[ -f /var/lib/edgeleaf/marker ] || fail "purge dropped the state"
echo "ok: purge removed the config and kept the state"
echo "check-deb: $(basename "$deb") OK"
