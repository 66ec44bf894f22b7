#!/usr/bin/env bash
# Builds a Debian package from an edgeleaf binary already built for TARGET:
#
#   scripts/package-deb.sh TARGET [--profile release|debug|qemu] [--out DIR]
#
# It packages target/TARGET/PROFILE/edgeleaf (build it first: `cargo build --release`
# or scripts/cross-build.sh TARGET --release) into DIR/edgeleaf_<version>_<arch>.deb
# (default DIR: target/debian). Contents:
#   /usr/bin/edgeleaf
#   /lib/systemd/system/edgeleaf.service, edgeleaf-leaf.service
#   /etc/edgeleaf/edgeleaf.toml (config/device.toml), /etc/edgeleaf/leaf.conf (conffiles)
#   /usr/share/doc/edgeleaf/{README.md, copyright, edgeleaf.toml.example}
# On install: a system user and group `edgeleaf`, /var/lib/edgeleaf (0700), the
# config readable by that group only, and - where systemd runs - the unit enabled
# and (re)started. On remove: the service stops; config and state are kept. On
# purge: the config goes; the state (agents, outbox) and the user are kept.
# Needs dpkg-deb and readelf (binutils); no debhelper, no cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

target="" profile=release out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:?}"; shift ;;
    --release) profile=release ;;
    --out) out="${2:?}"; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "package-deb: unknown option $1" >&2; exit 2 ;;
    *) target="$1" ;;
  esac
  shift
done
[ -n "$target" ] || { echo "usage: scripts/package-deb.sh TARGET [--profile release|debug|qemu] [--out DIR]" >&2; exit 2; }

case "$target" in
  x86_64-*) arch=amd64 objcopy=objcopy ;;
  aarch64-*) arch=arm64 objcopy=aarch64-linux-gnu-objcopy ;;
  armv7-*) arch=armhf objcopy=arm-linux-gnueabihf-objcopy ;;
  *) echo "package-deb: no Debian architecture for $target" >&2; exit 2 ;;
esac
bin="target/$target/$profile/edgeleaf"
host="$(rustc -vV | sed -n 's/^host: //p')"
if [ ! -x "$bin" ] && [ "$target" = "$host" ] && [ -x "target/$profile/edgeleaf" ]; then
  bin="target/$profile/edgeleaf"   # a plain `cargo build` for the host
fi
[ -x "$bin" ] || { echo "package-deb: $bin not found; build it first" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc="$(readelf -W --dyn-syms "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/edgeleaf_${version}_$arch"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/edgeleaf" \
  "$root/usr/share/doc/edgeleaf"
install -m 0755 "$bin" "$root/usr/bin/edgeleaf"
if [ "$profile" != release ]; then
  # A debug or qemu build is packaged only for checks; keep it small anyway.
  "$objcopy" --strip-debug "$root/usr/bin/edgeleaf" 2>/dev/null || true
fi
install -m 0644 systemd/edgeleaf.service systemd/edgeleaf-leaf.service "$root/lib/systemd/system/"
install -m 0640 config/device.toml "$root/etc/edgeleaf/edgeleaf.toml"
install -m 0640 config/leaf.conf "$root/etc/edgeleaf/leaf.conf"
install -m 0644 README.md "$root/usr/share/doc/edgeleaf/README.md"
install -m 0644 config/edgeleaf.toml "$root/usr/share/doc/edgeleaf/edgeleaf.toml.example"
license="$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: edgeleaf\nLicense: %s\n' \
  "$license" > "$root/usr/share/doc/edgeleaf/copyright"

size_kb="$(du -sk "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CONTROL
Package: edgeleaf
Version: $version
Architecture: $arch
Maintainer: edgeleaf maintainers <edgeleaf@localhost>
Installed-Size: $size_kb
Depends: adduser, libc6 (>= $glibc)
Recommends: nats-server
Section: net
Priority: optional
Description: WASM agents on edge hosts, beside a NATS leaf node
 edgeleaf runs WebAssembly agents in wasmtime sandboxes next to a local NATS
 leaf server, keeps deployments, agent state and an outbox in sled so it works
 offline, and reports heartbeats, results, events and logs to the hub.
CONTROL
printf '/etc/edgeleaf/edgeleaf.toml\n/etc/edgeleaf/leaf.conf\n' > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd edgeleaf >/dev/null; then
    adduser --system --group --home /var/lib/edgeleaf --no-create-home \
      --gecos "edgeleaf node" --quiet edgeleaf
  fi
  install -d -m 0700 -o edgeleaf -g edgeleaf /var/lib/edgeleaf
  chown root:edgeleaf /etc/edgeleaf /etc/edgeleaf/edgeleaf.toml /etc/edgeleaf/leaf.conf
  chmod 0750 /etc/edgeleaf
  chmod 0640 /etc/edgeleaf/edgeleaf.toml /etc/edgeleaf/leaf.conf
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable edgeleaf.service >/dev/null
    systemctl restart edgeleaf.service || echo "edgeleaf: the service did not start; see journalctl -u edgeleaf" >&2
  fi
  echo "edgeleaf: set leaf.hub_url and security.trusted_publishers in /etc/edgeleaf/edgeleaf.toml, then systemctl restart edgeleaf"
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop edgeleaf.service edgeleaf-leaf.service || true
  systemctl disable edgeleaf.service edgeleaf-leaf.service >/dev/null 2>&1 || true
fi
exit 0
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then
  rmdir /etc/edgeleaf 2>/dev/null || true
  if [ -d /var/lib/edgeleaf ]; then
    echo "edgeleaf: kept /var/lib/edgeleaf (agents, kv data, unsent outbox) and the user edgeleaf; remove them by hand if unwanted"
  fi
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/edgeleaf_${version}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
