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
# The node without a compiler (tests/cases/precompiled.rs): built first and copied
# aside, since both builds uplift to target/debug/edgeleaf; `cargo test` below puts
# the default build back there.
cargo build --locked --no-default-features --bin edgeleaf
mkdir -p target/runtime-only
cp target/debug/edgeleaf target/runtime-only/edgeleaf
export EDGELEAF_RUNTIME_ONLY_BIN="$PWD/target/runtime-only/edgeleaf"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --locked "$@"
