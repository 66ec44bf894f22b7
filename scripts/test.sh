#!/usr/bin/env bash
# Runs the whole test suite: unit tests, doc tests, and the integration tests that
# start real nats-server hub and leaf processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --locked "$@"
