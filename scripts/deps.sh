#!/usr/bin/env bash
# Installs what edgeleaf needs to build and run on Debian/Ubuntu: nats-server from the
# distribution and a Rust toolchain (rustup) when cargo is missing. Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

have_nats() { command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; }

if ! have_nats; then
  echo "deps: installing nats-server from the distribution" >&2
  # A mirror hiccup for one index must not stop us; the install below is checked.
  $SUDO apt-get update -qq || echo "deps: apt-get update reported errors; trying the install anyway" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
have_nats || { echo "deps: nats-server is still missing after apt-get install" >&2; exit 1; }

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
