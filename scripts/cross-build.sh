#!/usr/bin/env bash
# Builds edgeleaf for another target on a plain Debian machine, without Docker:
#
#   scripts/cross-build.sh TARGET [--release] [--profile NAME] [--runtime-only] [--print-runner] [-- CARGO ARGS...]
#
# The binary lands where cargo puts it: target/TARGET/{debug,release}/edgeleaf.
# --runtime-only: a device build (cargo --no-default-features), without Cranelift and
# the operator's commands, that runs only code precompiled for it, which a signed
# `edgeleaf deploy` from a full build makes (BENCHMARKS.md "Small boards").
# TARGET is one of
#   x86_64-unknown-linux-gnu         the host
#   aarch64-unknown-linux-gnu        64-bit ARM (Raspberry Pi 3/4/5 with a 64-bit OS, most gateways)
#   armv7-unknown-linux-gnueabihf    32-bit ARM (Raspberry Pi 2/3 with a 32-bit OS, older gateways)
#   *-unknown-linux-musl             only with rustup's target installed (no Debian route)
#
# Route, in order of preference:
#   1. rustup's target, when `rustup target list --installed` has it; only the C
#      cross compiler comes from Debian (gcc-<triple>, for ring and the linker).
#   2. aarch64: Debian's rustc-web with its multiarch std (libstd-rust-web-dev:arm64).
#   3. armv7: Debian's rustc-web building std from source (-Z build-std), since
#      Debian's armhf std lags behind.
# Missing Debian packages are installed (apt-get; sudo when not root). A failed
# `apt-get update` for one architecture's index does not stop the build; only a
# package that is still missing afterwards does.
#
# --print-runner prints the command that runs a binary of TARGET here (qemu-user) and
# builds nothing: `$(scripts/cross-build.sh armv7-unknown-linux-gnueabihf --print-runner)
# target/armv7-unknown-linux-gnueabihf/release/edgeleaf --version`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

target=""
profile=""
print_runner=0
runtime_only=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --profile) profile="${2:?--profile needs a name}"; shift ;;
    --print-runner) print_runner=1 ;;
    --runtime-only) runtime_only=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "cross-build: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) [ -z "$target" ] || { echo "cross-build: one TARGET only" >&2; exit 2; }; target="$1" ;;
  esac
  shift
done
[ -n "$target" ] || { usage >&2; exit 2; }

have_rustup_target() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$1"
}

host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
env_name="$(echo "$target" | tr 'a-z-' 'A-Z_')"
cc_name="$(echo "$target" | tr '-' '_')"
cargo=(cargo)
cargo_flags=()
runner=""
packages=()
gcc=""

case "$target" in
  "$host"|x86_64-unknown-linux-gnu)
    [ "$target" = "$host" ] || { echo "cross-build: $target is not this host ($host)" >&2; exit 2; }
    ;;
  aarch64-unknown-linux-gnu)
    gcc=aarch64-linux-gnu-gcc; packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    runner="qemu-aarch64-static"  # no -L: the multiarch libc6:arm64 is in /lib already
    ;;
  armv7-unknown-linux-gnueabihf)
    gcc=arm-linux-gnueabihf-gcc; packages+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
    runner="qemu-arm-static -L /usr/arm-linux-gnueabihf"
    ;;
  aarch64-unknown-linux-musl|armv7-unknown-linux-musleabihf|x86_64-unknown-linux-musl)
    have_rustup_target "$target" || {
      echo "cross-build: $target needs rustup's target (rustup target add $target) or cross (Cross.toml); Debian has no musl Rust std" >&2
      exit 2
    }
    ;;
  *)
    echo "cross-build: unsupported target $target (try --help)" >&2; exit 2 ;;
esac
case "$runner" in
  qemu-aarch64-static*|qemu-arm-static*) packages+=(qemu-user-static) ;;
esac
if [ "$print_runner" = 1 ]; then
  echo "$runner"
  exit 0
fi

if [ "$target" = "$host" ]; then
  :
elif have_rustup_target "$target"; then
  echo "cross-build: rustup's $target" >&2
else
  # Debian's rustc-web (/usr/bin/rustc); put /usr/bin first so rustup's shims lose.
  packages+=(rustc-web cargo-web)
  export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc
  cargo=(/usr/bin/cargo)
  case "$target" in
    aarch64-unknown-linux-gnu)
      echo "cross-build: Debian's rustc-web with the arm64 multiarch std" >&2
      if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        APT_UPDATED=""
      fi
      packages+=("libstd-rust-web-dev:$(dpkg --print-architecture)" libstd-rust-web-dev:arm64)
      ;;
    armv7-unknown-linux-gnueabihf)
      echo "cross-build: Debian's rustc-web with -Z build-std" >&2
      packages+=(rust-web-src)
      export RUSTC_BOOTSTRAP=1
      cargo_flags+=(-Z build-std=std,panic_unwind)
      ;;
  esac
fi

[ ${#packages[@]} -eq 0 ] || apt_require "${packages[@]}"

if [ -n "$gcc" ]; then
  export "CARGO_TARGET_${env_name}_LINKER=$gcc" "CC_${cc_name}=$gcc" "AR_${cc_name}=${gcc%-gcc}-ar"
  [ -z "$runner" ] || export "CARGO_TARGET_${env_name}_RUNNER=$runner"
fi

[ "$runtime_only" = 0 ] || cargo_flags+=(--no-default-features)
profile_flags=()
case "$profile" in
  "") ;;
  release) profile_flags=(--release) ;;
  *) profile_flags=(--profile "$profile") ;;
esac
set -x
"${cargo[@]}" build --locked --target "$target" "${cargo_flags[@]}" "${profile_flags[@]}" "${extra[@]}"
