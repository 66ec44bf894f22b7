#!/usr/bin/env bash
# Installs edgeleaf on a Linux device without the .deb (any distribution with
# systemd, or none): the binary, the systemd units, the config, a system user and
# the state directory - what the package installs, under /usr/local.
#
#   sudo scripts/install.sh [--bin PATH] [--no-start]
#   sudo scripts/install.sh --uninstall          # keeps /etc/edgeleaf and /var/lib/edgeleaf
#
# --bin: the edgeleaf binary to install (default: target/release/edgeleaf, else the
# newest target/*/release/edgeleaf). An existing /etc/edgeleaf/edgeleaf.toml is kept.
# With systemd running, the unit is enabled and started unless --no-start.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "install: run as root (sudo $0 $*)" >&2; exit 1; }

bin="" start=1 uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="${2:?--bin needs a path}"; shift ;;
    --no-start) start=0 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
systemd=0; [ -d /run/systemd/system ] && systemd=1

if [ "$uninstall" = 1 ]; then
  if [ "$systemd" = 1 ]; then
    systemctl disable --now edgeleaf.service edgeleaf-leaf.service 2>/dev/null || true
  fi
  rm -f /usr/local/bin/edgeleaf /etc/systemd/system/edgeleaf.service /etc/systemd/system/edgeleaf-leaf.service
  [ "$systemd" = 0 ] || systemctl daemon-reload
  echo "install: removed edgeleaf; kept /etc/edgeleaf, /var/lib/edgeleaf and the user edgeleaf"
  exit 0
fi

if [ -z "$bin" ]; then
  bin="$here/target/release/edgeleaf"
  [ -x "$bin" ] || bin="$(ls -t "$here"/target/*/release/edgeleaf 2>/dev/null | head -1 || true)"
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "install: no edgeleaf binary; build one or pass --bin PATH" >&2; exit 1; }
"$bin" --version >/dev/null || { echo "install: $bin does not run on this machine (wrong architecture?)" >&2; exit 1; }

install -m 0755 "$bin" /usr/local/bin/edgeleaf
for unit in edgeleaf.service edgeleaf-leaf.service; do
  sed 's#/usr/bin/edgeleaf#/usr/local/bin/edgeleaf#' "$here/systemd/$unit" > "/etc/systemd/system/$unit.tmp"
  chmod 0644 "/etc/systemd/system/$unit.tmp"
  mv "/etc/systemd/system/$unit.tmp" "/etc/systemd/system/$unit"
done 2>/dev/null || echo "install: no /etc/systemd/system; units not installed" >&2

if ! getent passwd edgeleaf >/dev/null; then
  if command -v adduser >/dev/null && adduser --help 2>&1 | grep -q -- --system; then
    adduser --system --group --home /var/lib/edgeleaf --no-create-home --quiet edgeleaf
  else
    useradd --system --user-group --home-dir /var/lib/edgeleaf --no-create-home \
      --shell "$(command -v nologin || echo /sbin/nologin)" edgeleaf
  fi
fi
install -d -m 0700 -o edgeleaf -g edgeleaf /var/lib/edgeleaf
install -d -m 0750 -o root -g edgeleaf /etc/edgeleaf
[ -e /etc/edgeleaf/edgeleaf.toml ] || install -m 0640 -o root -g edgeleaf "$here/config/device.toml" /etc/edgeleaf/edgeleaf.toml
[ -e /etc/edgeleaf/leaf.conf ] || install -m 0640 -o root -g edgeleaf "$here/config/leaf.conf" /etc/edgeleaf/leaf.conf

command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] ||
  echo "install: nats-server not found; install it (apt-get install nats-server) or set [leaf] nats_server" >&2
runuser -u edgeleaf -- env EDGELEAF_NODE_STATE_DIR=/var/lib/edgeleaf \
  /usr/local/bin/edgeleaf node --config /etc/edgeleaf/edgeleaf.toml --check

if [ "$systemd" = 1 ]; then
  systemctl daemon-reload
  if [ "$start" = 1 ]; then systemctl enable --now edgeleaf.service; else systemctl enable edgeleaf.service; fi
  systemctl --no-pager status edgeleaf.service | head -5 || true
else
  echo "install: systemd is not running here; start the node with:"
  echo "  runuser -u edgeleaf -- env EDGELEAF_NODE_STATE_DIR=/var/lib/edgeleaf /usr/local/bin/edgeleaf node --config /etc/edgeleaf/edgeleaf.toml"
fi
echo "install: set leaf.hub_url and security.trusted_publishers in /etc/edgeleaf/edgeleaf.toml, then restart edgeleaf"
