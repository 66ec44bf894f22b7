#!/usr/bin/env bash
# A node's footprint, in the style Greengrass Lite publishes: what it installs, how
# fast it starts, what memory the node and its leaf hold idle and under load, and
# what a deploy writes to disk.
#
#   cargo build --release && bash benches/footprint.sh           (from the repository root)
#   NODE_SRC=target/x86_64-unknown-linux-gnu/release/edgeleaf bash benches/footprint.sh
#                                     (a device build: scripts/cross-build.sh
#                                      x86_64-unknown-linux-gnu --release --runtime-only)
#
# BIN_SRC (default target/release/edgeleaf, a full build) runs the operator's side:
# `hub init`, `keys gen`, `deploy` (which precompiles for a node without a compiler).
# NODE_SRC (default BIN_SRC) is the node measured. On loopback with kernel-chosen
# ports: a hub nats-server (JetStream, domain hub) and one node `dev` with its spawned
# leaf, default settings but for the keys it trusts (heartbeat every 10 s, batch
# outbox). Measured:
#  - install size: the node binary and the nats-server binary the leaf runs;
#  - start to the first heartbeat on the hub (spawn to arrival): the first start on an
#    empty state directory, then RUNS restarts on the same one (median);
#  - node and leaf RSS and PSS (/proc/PID/smaps_rollup) after IDLE s with one agent
#    (echo.wasm), and the largest seen, sampled each second, while a client on the hub
#    keeps 64 requests in flight to it for LOAD s;
#  - bytes the node writes (/proc/PID/io: `wchar`, what it hands to write calls, and
#    `write_bytes`, what reaches the block layer) in 10 s idle, and for one signed
#    `deploy --wait` of a new module (threshold.wasm, 115 KB), counted until 3 s after
#    the deploy returned, less what 13 s of idling writes.
#
# Progress goes to stderr, the Markdown summary to stdout. Every process started here
# is stopped by pid on exit. Knobs: RUNS (5), IDLE (30), LOAD (15), KEEP=1, BIN_SRC,
# NODE_SRC, NATS_SERVER.
BENCH_NAME=footprint
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-5}
IDLE=${IDLE:-30}
LOAD=${LOAD:-15}
NODE_SRC=${NODE_SRC:-$BIN_SRC}
[[ -x $NODE_SRC ]] || die "$NODE_SRC missing"
NODE_BIN=$WORK/edgeleaf-node
cp "$NODE_SRC" "$NODE_BIN"

cat >"$WORK/fp.py" <<'PY'
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nt import mem, now


def cmd_peak(secs, *pids):
    """Samples each pid's RSS and PSS every second for secs; prints the largest."""
    peak = [(0, 0)] * len(pids)
    end = now() + float(secs)
    while now() < end:
        for i, pid in enumerate(pids):
            r, p = mem(pid)
            peak[i] = (max(peak[i][0], r), max(peak[i][1], p))
        time.sleep(1)
    print(" ".join(f"{r} {p}" for r, p in peak))


def cmd_io(pid):
    """wchar and write_bytes of pid."""
    vals = {}
    for line in open(f"/proc/{pid}/io"):
        k, _, v = line.partition(":")
        vals[k] = int(v)
    print(vals["wchar"], vals["write_bytes"])


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"peak": cmd_peak, "io": cmd_io}[cmd](*args)
PY
fp() { "$PY" "$WORK/fp.py" "$@"; }
median() { "$PY" -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
mib() { "$PY" -c "print(f'{$1 / 1024:.1f}')"; }

start_hub
hub_init
gen_key
LEAF_PORT=$(nt ports 1)
write_node_conf dev "$LEAF_PORT" batch
sed -i 's/^interval = "1s"$/interval = "10s"/' "$WORK/dev.toml"

NODE_PID=""
start_node() { start_node_bg dev "$NODE_BIN"; }
# Starts the node; ELAPSED = seconds from spawn to its first heartbeat on the hub.
ELAPSED=""
start_timed() {
    local t0 t_hb
    coproc HB { nt first_hb "$HUB_PORT" dev 60; }
    read -r _ <&"${HB[0]}"
    t0=$("$PY" -c 'import time; print(f"{time.time():.3f}")')
    start_node
    read -r t_hb _ <&"${HB[0]}" || die "no heartbeat from dev: $(tail -5 "$WORK/dev.log")"
    ELAPSED=$("$PY" -c "print(f'{$t_hb-$t0:.3f}')")
}

start_timed
first=$ELAPSED
log "first start, empty state directory: first heartbeat after ${first}s"
starts=()
for ((i = 0; i < RUNS; i++)); do
    stop_pid "$NODE_PID" TERM
    start_timed
    starts+=("$ELAPSED")
done
log "restarts: ${starts[*]} s"
compiler=$(nt request "$HUB_PORT" edgeleaf.ctl.dev.info '' 5 | sed 's/^ok //' | jget ok.wasm_compiler)

deploy() { timed_deploy "$1" "$2" "fp.$2" dev; } # FILE NAME
deploy "$DIST/echo.wasm" echo >/dev/null
reply=$(nt request "$HUB_PORT" fp.echo hello 10) || die "echo did not answer: $reply"
log "echo deployed; idle ${IDLE}s"
sleep "$IDLE"
LEAF_PID=$(cat "$WORK/dev/leaf/nats-server.pid")
read -r node_rss node_pss leaf_rss leaf_pss <<<"$(nt pss "$NODE_PID" "$LEAF_PID")"
log "idle: node RSS ${node_rss} KiB PSS ${node_pss} KiB; leaf RSS ${leaf_rss} KiB PSS ${leaf_pss} KiB"

log "load: 64 in flight for ${LOAD}s"
nt throughput "$HUB_PORT" fp.echo 0123456789abcdef 64 "$LOAD" >"$WORK/load.json" &
load_pid=$!
PIDS+=("$load_pid")
read -r lnode_rss lnode_pss lleaf_rss lleaf_pss <<<"$(fp peak "$LOAD" "$NODE_PID" "$LEAF_PID")"
wait "$load_pid" || die "load failed: $(cat "$WORK/load.json")"
rate=$(jget per_s <"$WORK/load.json")
log "under load (${rate} req/s): node RSS ${lnode_rss} KiB; leaf RSS ${lleaf_rss} KiB"

sleep 5
read -r w0 b0 <<<"$(fp io "$NODE_PID")"
sleep 10
read -r w1 b1 <<<"$(fp io "$NODE_PID")"
idle_w=$((w1 - w0))
idle_b=$((b1 - b0))
t_deploy=$(deploy "$DIST/threshold.wasm" threshold)
sleep 3
read -r w2 b2 <<<"$(fp io "$NODE_PID")"
# what 13 s of idling writes (10 s measured; the deploy took about a second more or less)
deploy_w=$((w2 - w1 - idle_w * 13 / 10))
deploy_b=$((b2 - b1 - idle_b * 13 / 10))
log "idle writes: ${idle_w} B (wchar) / ${idle_b} B (block) in 10 s; deploy: ${deploy_w} / ${deploy_b} B"

node_size=$(stat -c %s "$NODE_SRC")
nats_size=$(stat -c %s "$(readlink -f "$NATS_SERVER")")
cat <<EOF
### Footprint (\`bash benches/footprint.sh\`)

Node: $("$NODE_BIN" --version), $NODE_SRC, wasm compiler \`$compiler\`. CLI: $BIN_NOTE.
$NATS_VERSION. Load average at start: $LOAD_START.

| | node | leaf (nats-server) |
|---|---:|---:|
| installed binary | $node_size bytes ($(mib $((node_size / 1024))) MiB) | $nats_size bytes ($(mib $((nats_size / 1024))) MiB) |
| start to first heartbeat on the hub, empty state | $first s | (spawned by the node) |
| the same, restart (median of $RUNS: ${starts[*]}) | $(median "${starts[@]}") s | |
| RSS / PSS idle, one agent, after $IDLE s | $(mib "$node_rss") / $(mib "$node_pss") MiB | $(mib "$leaf_rss") / $(mib "$leaf_pss") MiB |
| RSS / PSS under load (largest, 64 in flight, $rate req/s) | $(mib "$lnode_rss") / $(mib "$lnode_pss") MiB | $(mib "$lleaf_rss") / $(mib "$lleaf_pss") MiB |
| written idle, 10 s (wchar / to the block layer) | $idle_w / $idle_b bytes | |
| written by one deploy of a 115 KB module ($t_deploy s) | $deploy_w / $deploy_b bytes | |
EOF
STATUS=0
