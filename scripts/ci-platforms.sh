#!/usr/bin/env bash
# The platform half of CI, run by .ci/run after scripts/test.sh (which builds the
# host binary and the agents it uses):
#   1. the amd64 .deb, built from the host's debug binary, installed with dpkg and
#      checked (scripts/check-deb.sh);
#   2. the aarch64 node, cross-built and run under qemu against real nats-servers
#      (scripts/cross-smoke.sh);
#   3. the same for armv7 (Pulley), unless EDGELEAF_CI_ARMV7=0.
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

step "deb amd64: build, dpkg -i, check, remove, purge" deb_check
step "aarch64 node under qemu" scripts/cross-smoke.sh aarch64-unknown-linux-gnu
if [ "${EDGELEAF_CI_ARMV7:-1}" != 0 ]; then
  step "armv7 node under qemu (Pulley)" scripts/cross-smoke.sh armv7-unknown-linux-gnueabihf
fi

echo "=== ci-platforms summary" >&2
printf '%s\n' "${results[@]}" >&2
exit $failed
