#!/usr/bin/env bash
# Self-update (`edgeleaf upgrade`): how long a node's agent is unavailable while the
# node replaces its binary, against a plain restart of the node, and how long the
# whole upgrade takes.
#
#   cargo build --release && bash benches/upgrade.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub, leafnode listener), runs `edgeleaf hub init`, makes a publisher key, and runs
# node b1 (`edgeleaf node -c`, spawned leaf, heartbeat 1 s) with one configured agent
# (echo.wasm on bench.echo). A raw-protocol Python client on the hub sends a request
# on bench.echo every 10 ms (50 ms timeout) throughout each measurement and records
# which were answered. Per run (RUNS, default 3):
#
#  1. restart: the node is stopped (SIGTERM, waiting in 5 ms steps until it exited)
#     and started again (`edgeleaf node -c`), as `systemctl restart` would: the
#     baseline an upgrade is compared with;
#  2. upgrade: the release binary, stamped with a new version (`<version>-bench.<run>`,
#     the version slot rewritten in a copy), is shipped with `edgeleaf upgrade FILE
#     --version V --node b1 --key K --wait 120s --json`. The node downloads it, checks
#     it, stops, runs it on trial until it is healthy, stops it, and execs it.
#
# For each: the longest stretch without an answer (from the last answered request
# before it to the first one after), the requests that got none, and for 2. the time
# until `edgeleaf upgrade` returned (upload, download, trial, exec, and the CLI seeing
# the outcome in a heartbeat). Progress goes to stderr, the Markdown summary to stdout.
# Every process started here is stopped by pid on exit. Knobs: RUNS=3, KEEP=1,
# BIN_SRC, NATS_SERVER.

BENCH_NAME=upgrade
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
CMDLINE="bash benches/upgrade.sh"
[[ $RUNS == 3 ]] || CMDLINE="RUNS=$RUNS $CMDLINE"

# The gap monitor: requests every 10 ms until $WORK/stop-monitor exists; prints JSON.
cat >"$WORK/gap.py" <<'PY'
import json, os, sys, time
sys.path.insert(0, os.path.dirname(__file__))
from nt import Nats, connect_retry, now

port, subject, stop_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = connect_retry(port, now() + 10)
t0 = now()
last_ok = None
longest = 0.0
missed = 0
answered = 0
while not os.path.exists(stop_file):
    t = now()
    try:
        status, data, _ = c.request(subject, b"ping", 0.05)
    except (OSError, ConnectionError):
        c.close()
        c = connect_retry(port, now() + 10)
        continue
    if status == "ok" and data == b"ping":
        answered += 1
        if last_ok is not None:
            longest = max(longest, t - last_ok)
        last_ok = t
    else:
        missed += 1
    time.sleep(max(0.0, 0.01 - (now() - t)))
print(json.dumps({"longest_gap_ms": round(longest * 1000, 1), "missed": missed,
                  "answered": answered, "window_ms": round((now() - t0) * 1000, 1)}))
PY

# monitor_start: the gap monitor in the background; monitor_stop stops it, and its
# JSON is in $WORK/gap.json (not a $(…): the monitor is this shell's child).
monitor_start() {
    rm -f "$WORK/stop-monitor"
    "$PY" "$WORK/gap.py" "$HUB_PORT" bench.echo "$WORK/stop-monitor" >"$WORK/gap.json" &
    MON_PID=$!
    PIDS+=("$MON_PID")
    sleep 1 # a second of answered requests first
}
monitor_stop() {
    sleep 2 # and a couple of seconds after
    touch "$WORK/stop-monitor"
    wait "$MON_PID" || die "gap monitor failed"
}

# restart_b1: what `systemctl restart` does, without polling delays of our own:
# SIGTERM, wait (5 ms steps) until the process is gone (it stops its leaf first),
# start it again. The monitor sees when echo answers again.
restart_b1() {
    local pid i
    pid=$(node_pid b1)
    [[ -n $pid ]] || die "node b1 is not running"
    kill -TERM "$pid"
    for ((i = 0; i < 4000; i++)); do
        alive "$pid" || break
        sleep 0.005
    done
    alive "$pid" && die "b1 did not stop within 20 s"
    env "EDGELEAF_LOG=$NODE_LOG" "$BIN" node -c "$WORK/b1.toml" >>"$WORK/b1.log" 2>&1 &
    echo "$!" >>"$PIDS_FILE"
}

# stamp SRC DST VERSION: a copy of SRC with VERSION in its version slot.
stamp() {
    "$PY" - "$1" "$2" "$3" <<'PY' || die "cannot stamp $2"
import re, sys
src, dst, version = sys.argv[1:]
data = bytearray(open(src, "rb").read())
hits = [m.start() for m in re.finditer(rb"EDGELEAF~VERSN~=(?=[0-9])", data)]
if len(hits) != 1:
    sys.exit(f"{len(hits)} version slots in {src}")
at = hits[0] + 16
data[at:at + 48] = version.encode().ljust(48, b"\0")
open(dst, "wb").write(data)
PY
    chmod 755 "$2"
}

log "work dir $WORK; $BIN_NOTE"
start_hub
hub_init
gen_key
LEAF_PORT=$(nt ports 1)
write_node_conf b1 "$LEAF_PORT" batch "$(cat <<EOF
[upgrade]
health_timeout = "60s"
[[agents]]
name = "echo"
wasm = "$DIST/echo.wasm"
triggers = ["bench.echo"]
EOF
)"
J=$(start_node_probe b1 bench.echo "$HUB_PORT")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/b1.log" >&2; die "node b1 did not start: $J"; }
log "node b1 up (pid $(node_pid b1)), echo answering after $(jget ms_all <<<"$J") ms"
BASE=$("$BIN" --version | cut -d' ' -f2)
BIN_BYTES=$(stat -c %s "$BIN")

T_RG="" T_RM="" T_UG="" T_UM="" T_UC=""
ROWS=""
for ((r = 1; r <= RUNS; r++)); do
    # 1. restart
    monitor_start
    restart_b1
    monitor_stop
    M=$(cat "$WORK/gap.json")
    rg=$(jget longest_gap_ms <<<"$M") rm=$(jget missed <<<"$M")
    T_RG+=" $rg" T_RM+=" $rm"
    log "1. run $r: restart: longest gap $rg ms, $rm requests unanswered"

    # 2. upgrade
    version=$BASE-bench.$r
    file=$WORK/edgeleaf-$version
    stamp "$BIN" "$file" "$version"
    pid=$(node_pid b1)
    monitor_start
    t0=$EPOCHREALTIME
    out=$("$BIN" upgrade "$file" --version "$version" --node b1 --key "$KEY" --wait 120s --json -s "$HUB_URL" 2>"$WORK/upgrade-$r.log") \
        || { cat "$WORK/upgrade-$r.log" >&2; tail -n 40 "$WORK/b1.log" >&2; die "upgrade $r: $out"; }
    uc=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    monitor_stop
    M=$(cat "$WORK/gap.json")
    outcome=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["nodes"][0]["outcome"])' <<<"$out")
    [[ $outcome == upgraded ]] || die "upgrade $r: $out"
    [[ $(node_pid b1) == "$pid" ]] || die "upgrade $r: the node's pid changed"
    [[ $(readlink "/proc/$pid/exe") == "$WORK/b1/upgrade/edgeleaf-$version-"* ]] || die "upgrade $r: pid $pid runs $(readlink "/proc/$pid/exe")"
    ug=$(jget longest_gap_ms <<<"$M") um=$(jget missed <<<"$M")
    T_UG+=" $ug" T_UM+=" $um" T_UC+=" $uc"
    ROWS+="| $r | $rg | $rm | $version | $ug | $um | $uc |"$'\n'
    log "2. run $r: upgrade to $version: longest gap $ug ms, $um unanswered; upgrade returned after $uc ms"
done

UPTIME_END=$(uptime)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
WARNINGS=$(node_warnings "$WORK"/b1.log)
read -r a1 a2 a3 <<<"$(nt stats $T_RG)"
read -r b1 b2 b3 <<<"$(nt stats $T_RM)"
read -r c1 c2 c3 <<<"$(nt stats $T_UG)"
read -r d1 d2 d3 <<<"$(nt stats $T_UM)"
read -r e1 e2 e3 <<<"$(nt stats $T_UC)"

cat <<EOF
## Self-update — $(date -u '+%Y-%m-%d %H:%M UTC')

Command: \`$CMDLINE\` (from the repository root)

- edgeleaf: $BIN_NOTE ($BIN_BYTES bytes, shipped as is)
- nats-server: $NATS_VERSION; host: $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)
- load average (1/5/15 min) at start: $LOAD_START; at end: $LOAD_END
- node b1: spawned leaf, heartbeat 1 s, one configured agent (echo.wasm on bench.echo);
  client: raw-protocol Python client on the hub, a request every 10 ms (50 ms timeout)

| figure ($RUNS runs) | min | median | max |
|---|---|---|---|
| restart (SIGTERM, start again): longest stretch without an answer | $a1 ms | $a2 ms | $a3 ms |
| restart: requests unanswered | $b1 | $b2 | $b3 |
| upgrade: longest stretch without an answer | $c1 ms | $c2 ms | $c3 ms |
| upgrade: requests unanswered | $d1 | $d2 | $d3 |
| upgrade: \`edgeleaf upgrade\` spawned → returned with the node's outcome | $e1 ms | $e2 ms | $e3 ms |

Per run:

| run | restart gap (ms) | restart unanswered | upgraded to | upgrade gap (ms) | upgrade unanswered | upgrade CLI (ms) |
|---|---|---|---|---|---|---|
${ROWS}
EOF
if [[ -n $WARNINGS ]]; then
    printf '\nWarnings and errors logged by node b1 (count, message):\n\n```\n%s\n```\n' "$WARNINGS"
fi
printf '\n`uptime` at start: %s\n`uptime` at end:   %s\n' "$UPTIME_START" "$UPTIME_END"
STATUS=0
