#!/usr/bin/env bash
# Agents in each language, from `edgeleaf new` to a warm node: build time and module
# size, the node's compile of the module (first load, no compiled cache), the first
# invocation, sequential latency, and the load after a node restart (compiled cache
# warm). Rust and C agents are the baseline for the Python and JavaScript ones, in the
# same run on the same node.
#
#   cargo build --release && EDGELEAF_GUESTS=all bash scripts/deps.sh && bash benches/guests.sh
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub), `edgeleaf hub init`, and one node (`edgeleaf node -c`, spawned leaf). For each
# of rust, c, python and js: `edgeleaf new` and `edgeleaf build` (Rust with a fresh
# CARGO_TARGET_DIR: std and the SDK's crates are compiled too, nothing downloaded if
# cargo's cache has them), a signed `edgeleaf deploy --node` (the node fetches,
# compiles and starts the agent; the compile time is the node's own `compiled` debug
# line), then, from a client on the hub, one first request and 200 sequential ones.
# Then the node is restarted and the time until all of them answer is taken.
# Knobs: LANGS="rust c python js", N=200, BIN_SRC, KEEP=1, NATS_SERVER.

BENCH_NAME=guests
source "$(dirname "$0")/lib.sh"
LANGS=${LANGS:-rust c python js}
N=${N:-200}
NODE_LOG="info,edgeleaf::runtime::engine=debug"

start_hub
hub_init
gen_key
LEAF_PORT=$(nt ports 1)
write_node_conf g1 "$LEAF_PORT" batch ""
J=$(start_node_probe g1 edgeleaf.ctl.g1.info "$HUB_PORT")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/g1.log" >&2; die "node g1 did not start: $J"; }
log "node g1 up (pid $(node_pid g1))"

secs_since() { "$PY" -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.2f}")' "$1"; }
now_s() { "$PY" -c 'import time; print(time.time())'; }
# The node's compile time of the module with this sha256 (debug line "compiled").
compile_ms() {
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/g1.log" | grep "compiled" | grep -v "cache hit" | grep "$1" \
        | grep -o 'elapsed=[0-9.]*[µm]*s' | tail -n1 | "$PY" -c '
import sys
s = sys.stdin.read().strip().removeprefix("elapsed=")
if not s: print("?"); sys.exit()
for unit, f in (("µs", 1e-3), ("ms", 1.0), ("s", 1e3)):
    if s.endswith(unit):
        print(f"{float(s[: -len(unit)]) * f:.0f}"); break'
}

ROWS=()
SUBJECTS=""
for lang in $LANGS; do
    name=hello-$lang
    dir=$WORK/src/$name
    "$BIN" new --lang "$lang" "$name" --dir "$dir" >/dev/null || die "new --lang $lang"
    t=$(now_s)
    CARGO_TARGET_DIR=$WORK/cargo-target "$BIN" build "$dir" >"$WORK/build-$lang.log" 2>&1 \
        || { tail -n 20 "$WORK/build-$lang.log" >&2; die "build $lang"; }
    build_s=$(secs_since "$t")
    wasm=$dir/dist/$name.wasm
    size=$(stat -c %s "$wasm")
    digest=$(sha256sum "$wasm" | cut -c1-64)
    t=$(now_s)
    "$BIN" deploy "$wasm" --name "$name" --trigger "$name.in" --node g1 --key "$KEY" \
        -s "$HUB_URL" --wait 600s >"$WORK/deploy-$lang.log" 2>&1 \
        || { cat "$WORK/deploy-$lang.log" >&2; die "deploy $lang"; }
    deploy_s=$(secs_since "$t")
    compiled=$(compile_ms "$digest")
    # One request, no warm-up: the first invocation after the agent started.
    F=$(nt latency "$HUB_PORT" "$name.in" ping 1 0 30)
    [[ $(jget n <<<"$F") == 1 ]] || die "first request to $name: $F"
    first_ms=$("$PY" -c 'import sys; print(f"{float(sys.argv[1])/1e3:.1f}")' "$(jget p50_us <<<"$F")")
    L=$(nt latency "$HUB_PORT" "$name.in" ping "$N" 5 120)
    log "$lang: build ${build_s}s, $size bytes, deploy ${deploy_s}s (compile ${compiled} ms), first ${first_ms} ms, $L"
    ROWS+=("| $lang | $build_s s | $(numfmt --to=iec --suffix=B "$size") | $deploy_s s | $compiled ms | $first_ms ms | $(jget p50_us <<<"$L") µs | $(jget p99_us <<<"$L") µs |")
    SUBJECTS+="${SUBJECTS:+,}$name.in"
done
RSS=$(nt rss "$(node_pid g1)")

stop_node g1
log "node g1 stopped ($LAST_STOP); restarting with its compiled cache"
J=$(start_node_probe g1 "$SUBJECTS" "$HUB_PORT")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/g1.log" >&2; die "node g1 did not come back: $J"; }
RESTART=$(jget ms_all <<<"$J")
[[ -n $RESTART ]] || die "node g1 did not serve all four after the restart: $J"
RSS_AFTER=$(nt rss "$(node_pid g1)")
HITS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/g1.log" | grep -c "compiled cache hit" || true)

cat <<EOF

## Agents in each language ($(date -u '+%Y-%m-%d %H:%M UTC'))
$BIN_NOTE; $NATS_VERSION; load at start $LOAD_START

| lang | edgeleaf build | module | deploy → running | node compile | first request | p50 ($N seq.) | p99 |
|---|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${ROWS[@]}")

Node RSS with these agents: $((RSS / 1024)) MiB. Restarted with the compiled cache:
all answering $RESTART ms after the spawn (each: $(jget ms <<<"$J")); compiled-cache hits in the node
log (both runs): $HITS; RSS then $((RSS_AFTER / 1024)) MiB.
EOF
STATUS=0
