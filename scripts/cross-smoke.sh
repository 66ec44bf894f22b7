#!/usr/bin/env bash
# Builds the edgeleaf node for another architecture and runs it under qemu-user
# against real x86_64 nats-servers on loopback: it must spawn its leaf, serve a
# configured agent, take a signed deployment from the hub, forward its results, and
# report its architecture and wasm compiler (tests/cases/cross.rs).
#
#   scripts/cross-smoke.sh TARGET [--release | --profile NAME] [--runtime-only]
#     TARGET: aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf
#     --runtime-only: the node without a compiler; its agents come precompiled
#     (`edgeleaf precompile` and a signed deploy, from this host's build).
#     profile: `qemu` by default (Cargo.toml: the debug build with unoptimised
#     dependencies except Cranelift, Pulley and wasmtime, which run the agents: the
#     cross builds were most of CI's time), or release, or any cargo profile.
#
# Exit codes: 0 passed, 1 failed, 3 skipped because the cross toolchain could not be
# installed (a mirror mid-sync, no network): the caller decides whether that is fatal.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:?usage: scripts/cross-smoke.sh TARGET [--release | --profile NAME] [--runtime-only]}"
shift
profile=qemu
runtime_only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --profile) profile="${2:?--profile needs a name}"; shift ;;
    --runtime-only) runtime_only=(--runtime-only) ;;
    *) echo "cross-smoke: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$target" in
  aarch64-unknown-linux-gnu) arch=aarch64 compiler=cranelift ;;
  armv7-unknown-linux-gnueabihf) arch=arm compiler=pulley ;;
  *) echo "cross-smoke: no smoke test for $target" >&2; exit 2 ;;
esac
[ ${#runtime_only[@]} -eq 0 ] || compiler=none

EDGELEAF_GUESTS=1 source scripts/deps.sh
bash wasm-agents/build.sh

started=$(date +%s)
build_log="$(mktemp)"
trap 'rm -f "$build_log"' EXIT
if ! scripts/cross-build.sh "$target" --profile "$profile" "${runtime_only[@]}" 2> >(tee "$build_log" >&2); then
  if grep -q '^apt: still missing' "$build_log"; then
    echo "cross-smoke: SKIPPED $target: its toolchain could not be installed (see above)" >&2
    exit 3
  fi
  echo "cross-smoke: FAILED to build $target" >&2
  exit 1
fi
echo "cross-smoke: built $target ($profile) in $(( $(date +%s) - started ))s" >&2

runner="$(scripts/cross-build.sh "$target" --print-runner)"
bin="target/$target/$([ "$profile" = dev ] && echo debug || echo "$profile")/edgeleaf"
$runner "$bin" --version
EDGELEAF_CROSS_NODE_BIN="$bin" EDGELEAF_CROSS_NODE_RUNNER="$runner" EDGELEAF_CROSS_TARGET="$target" \
  EDGELEAF_EXPECT_ARCH="$arch" EDGELEAF_EXPECT_COMPILER="$compiler" EDGELEAF_AGENTS_BUILT=1 \
  cargo test --locked --test tests cases::cross -- --ignored --nocapture
