#!/usr/bin/env bash
# Runs the whole test suite: unit tests, doc tests, and the integration tests that
# start real nats-server hub and leaf processes on free loopback ports and run real
# wasm agents built from wasm-agents/.
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELEAF_GUESTS=all EDGELEAF_CLIENTS=1 EDGELEAF_BROWSER=1 source scripts/deps.sh
# The tests run agents built from source in wasm-agents/ (build once per run;
# cargo makes it quick when nothing changed).
bash wasm-agents/build.sh
export EDGELEAF_AGENTS_BUILT=1
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --locked "$@"
