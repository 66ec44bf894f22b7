#!/usr/bin/env bash
# Installs what edgeleaf needs to build and run on Debian/Ubuntu: nats-server from the
# distribution, a Rust toolchain (rustup) when cargo is missing, and - with
# EDGELEAF_GUESTS=1 - the toolchain that builds the wasm agents in wasm-agents/
# (Debian's rustc with std sources, wasm-ld, clang and wasi-libc; see
# wasm-agents/README.md). Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_nats() { command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; }

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    # A mirror hiccup for one index must not stop us; what we need is checked after.
    $SUDO apt-get update -qq || echo "deps: apt-get update reported errors; trying the install anyway" >&2
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! have_nats; then
  echo "deps: installing nats-server from the distribution" >&2
  apt_install nats-server
fi
have_nats || { echo "deps: nats-server is still missing after apt-get install" >&2; exit 1; }

GUEST_PACKAGES="rustc-web cargo-web rust-web-src lld wasi-libc clang libclang-rt-14-dev-wasm32"
if [ "${EDGELEAF_GUESTS:-0}" = 1 ]; then
  missing=""
  for p in $GUEST_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "deps: installing the wasm guest toolchain:$missing" >&2
    apt_install $missing
  fi
  for p in $GUEST_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || { echo "deps: $p is still missing after apt-get install" >&2; exit 1; }
  done
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: installing a Rust toolchain with rustup (minimal profile)" >&2
  command -v curl >/dev/null 2>&1 || $SUDO apt-get install -y -qq curl ca-certificates >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "deps: cargo is missing" >&2; exit 1; }
