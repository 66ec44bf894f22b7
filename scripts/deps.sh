#!/usr/bin/env bash
# Installs what edgeleaf needs to build and run on Debian/Ubuntu: nats-server from the
# distribution, a Rust toolchain (rustup) when cargo is missing, and - with
# EDGELEAF_GUESTS=1 - the toolchain that builds the wasm agents in wasm-agents/
# (Debian's rustc with std sources, wasm-ld, clang and wasi-libc; see
# wasm-agents/README.md), and with EDGELEAF_CLIENTS=1 a Python venv with nats-py
# (target/clients-py) for the tests that run examples/orchestrator.py, exported as
# EDGELEAF_PYTHON, and with EDGELEAF_BROWSER=1 Debian's chromium (the dashboard test
# drives it headless). Idempotent.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

have_nats() { command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; }

if ! have_nats; then
  echo "deps: installing nats-server from the distribution" >&2
  apt_install nats-server
fi
have_nats || { echo "deps: nats-server is still missing after apt-get install" >&2; exit 1; }

GUEST_PACKAGES="rustc-web cargo-web rust-web-src lld wasi-libc clang libclang-rt-14-dev-wasm32"
if [ "${EDGELEAF_GUESTS:-0}" = 1 ] || [ "${EDGELEAF_GUESTS:-0}" = all ]; then
  if [ -n "$(apt_missing $GUEST_PACKAGES)" ]; then
    echo "deps: installing the wasm guest toolchain: $(apt_missing $GUEST_PACKAGES)" >&2
  fi
  apt_require $GUEST_PACKAGES || exit 1
fi

# Keep these in step with COMPONENTIZE_PY / COMPONENTIZE_JS in src/cli/project.rs.
COMPONENTIZE_PY="componentize-py==0.25.1"
COMPONENTIZE_JS="@bytecodealliance/componentize-js@0.23.0"
if [ "${EDGELEAF_GUESTS:-0}" = all ]; then
  tools="${EDGELEAF_TOOLS:-${XDG_DATA_HOME:-$HOME/.local/share}/edgeleaf/tools}"
  mkdir -p "$tools"
  if ! "$tools/py/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py ${COMPONENTIZE_PY#*==}"; then
    echo "deps: installing $COMPONENTIZE_PY into $tools/py" >&2
    python3 -m venv "$tools/py" 2>/dev/null || { apt_require python3-venv && python3 -m venv "$tools/py"; } || exit 1
    "$tools/py/bin/pip" install -q "$COMPONENTIZE_PY" ||
      { echo "deps: pip install $COMPONENTIZE_PY failed" >&2; exit 1; }
  fi
  if ! grep -qs "\"version\": \"${COMPONENTIZE_JS##*@}\"" "$tools/js/node_modules/@bytecodealliance/componentize-js/package.json"; then
    command -v npm >/dev/null 2>&1 || apt_require nodejs npm || exit 1
    echo "deps: installing $COMPONENTIZE_JS into $tools/js" >&2
    mkdir -p "$tools/js"
    (cd "$tools/js" && npm install --no-audit --no-fund --silent --prefix . "$COMPONENTIZE_JS") ||
      { echo "deps: npm install $COMPONENTIZE_JS failed" >&2; exit 1; }
  fi
fi

if [ "${EDGELEAF_BROWSER:-0}" = 1 ]; then
  if [ -n "$(apt_missing chromium)" ]; then
    echo "deps: installing chromium (headless, for the dashboard test)" >&2
  fi
  apt_require chromium || exit 1
fi

if [ "${EDGELEAF_CLIENTS:-0}" = 1 ]; then
  venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/clients-py"
  if ! "$venv/bin/python" -c 'import nats' 2>/dev/null; then
    echo "deps: installing nats-py into $venv" >&2
    apt_require python3-venv || exit 1
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'nats-py==2.16.0' ||
      { echo "deps: pip install nats-py failed" >&2; exit 1; }
  fi
  export EDGELEAF_PYTHON="$venv/bin/python"
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
