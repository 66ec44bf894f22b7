#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install what is needed, build, and run
# `edgeleaf up` (a hub, a leaf and a node on loopback; Ctrl-C stops all of it).
# Extra arguments go to `edgeleaf up` (see `edgeleaf up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
cargo build --release --locked
exec ./target/release/edgeleaf up "$@"
