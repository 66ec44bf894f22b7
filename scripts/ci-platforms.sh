#!/usr/bin/env bash
# The platform half of CI, run by .ci/run after scripts/test.sh (which builds the
# host binary and the agents it uses):
#   1. the amd64 .deb, built from the host's debug binary, installed with dpkg and
#      checked (scripts/check-deb.sh);
#   2. the aarch64 node, cross-built and run under qemu against real nats-servers
#      (scripts/cross-smoke.sh);
#   3. the aarch64 node built without a compiler (--runtime-only), running agents
#      precompiled by this host's build (after 2: it replaces that binary);
#   4. the same as 2 for armv7 (Pulley), unless EDGELEAF_CI_ARMV7=0.
# A cross toolchain that cannot be installed (a Debian mirror mid-sync) skips that
# target with a warning; every other failure fails CI.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh

results=()
failed=0
step() { # NAME COMMAND...
  local name="$1"; shift
  local started=$SECONDS rc=0
  echo "=== ci-platforms: $name" >&2
  "$@" || rc=$?
  local took=$(( SECONDS - started ))
  case "$rc" in
    0) results+=("PASS  $name (${took}s)") ;;
    3) results+=("SKIP  $name (${took}s): toolchain could not be installed") ;;
    *) results+=("FAIL  $name (${took}s)"); failed=1 ;;
  esac
}

deb_check() {
  # systemd-analyze (verify the units) comes with the systemd package; optional.
  apt_install systemd binutils || true
  cargo build --locked --bin edgeleaf &&
    deb="$(scripts/package-deb.sh x86_64-unknown-linux-gnu --profile debug)" &&
    scripts/check-deb.sh "$deb"
}

# The node under qemu, then its package: the right Debian architecture, and a
# binary for the right machine inside.
cross_check() { # TARGET DEB_ARCH ELF_MACHINE
  scripts/cross-smoke.sh "$1" || return
  local deb dir
  deb="$(scripts/package-deb.sh "$1" --profile qemu)" || return
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$2" ] || { echo "ci: $deb is not $2" >&2; return 1; }
  dir="$(mktemp -d)"
  dpkg-deb -x "$deb" "$dir"
  readelf -h "$dir/usr/bin/edgeleaf" | grep -q "Machine:.*$3" || { echo "ci: $deb holds no $3 binary" >&2; rm -rf "$dir"; return 1; }
  rm -rf "$dir"
  echo "ci: $(basename "$deb"): Architecture $2, $3 binary" >&2
}

step "deb amd64: build, dpkg -i, check, remove, purge" deb_check
step "aarch64 node under qemu, arm64 .deb" cross_check aarch64-unknown-linux-gnu arm64 AArch64
step "aarch64 runtime-only node under qemu (precompiled agents)" \
  scripts/cross-smoke.sh aarch64-unknown-linux-gnu --runtime-only
if [ "${EDGELEAF_CI_ARMV7:-1}" != 0 ]; then
  step "armv7 node under qemu (Pulley), armhf .deb" cross_check armv7-unknown-linux-gnueabihf armhf ARM
fi

echo "=== ci-platforms summary" >&2
printf '%s\n' "${results[@]}" >&2
exit $failed
