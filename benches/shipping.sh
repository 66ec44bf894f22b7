#!/usr/bin/env bash
# Shipping agents to a node: how long until a deployed agent answers.
#
#   cargo build --release && bash benches/shipping.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub, leafnode listener), runs `edgeleaf hub init`, makes a publisher key, and runs
# node b1 (`edgeleaf node -c`, spawned leaf, heartbeat 1 s, batch durability). Measures
# (RUNS runs each, min/median/max):
#
#  1. deploy → first reply: from just before `edgeleaf deploy FILE --name X --trigger T
#     --node b1 --key K --wait 0 -s <hub>` is spawned to the first successful reply to a
#     request on T from a client on the hub. Each run deploys a module with a new sha256
#     (the example with a custom section appended: same code, new digest, so it is
#     uploaded to the hub, fetched by the node and compiled), then deploys the same file
#     under a second name and trigger (module on the hub and in the node's local copy,
#     compiled code in the node's cache). echo.wasm and threshold.wasm.
#  2. offline node converging: node stopped (SIGTERM), `edgeleaf nodes --json` shows it
#     offline, echo (new digest) deployed to it with --wait 0, node started again: time
#     from spawning the node to the first reply on the trigger (client on the hub).
#  3. restart to serving with 10 deployed agents (a0..a9 on t.a0..t.a9, echo.wasm):
#     node stopped and started again, time from spawning it until all 10 answered —
#     (a) hub up, requests from the hub; (b) hub killed (SIGKILL) before the restart,
#     requests on the node's leaf port (restart from local state alone).
#
# The client is a raw-protocol Python client (standard library): it sends one request
# per pending subject (200 ms timeout; with no_responders a subject nobody serves yet
# answers 503 at once), pauses 5 ms, and repeats, so times have ~5-10 ms resolution.
# Progress goes to stderr, the Markdown summary to stdout. Every process started here is
# stopped by pid on exit. Knobs: RUNS=5, KEEP=1 (keep the work dir), BIN_SRC, NATS_SERVER.

BENCH_NAME=shipping
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
CMDLINE="bash benches/shipping.sh"
[[ $RUNS == 5 ]] || CMDLINE="RUNS=$RUNS $CMDLINE"

log "work dir $WORK; $BIN_NOTE"
start_hub
hub_init
gen_key
log "hub pid $HUB_PID on 127.0.0.1:$HUB_PORT (leafnodes $HUB_LEAF_PORT); publisher $PUBKEY"

LEAF_PORT=$(nt ports 1)
write_node_conf b1 "$LEAF_PORT" batch
J=$(start_node_probe b1 edgeleaf.ctl.b1.info "$HUB_PORT")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/b1.log" >&2; die "node b1 did not start: $J"; }
log "node b1 up (pid $(node_pid b1)), answering on the hub after $(jget ms_all <<<"$J") ms"

mkdir -p "$WORK/mods"
THRESHOLD_PAYLOAD='{"sensor":"t","value":1}'

# deploy_probe FILE NAME TRIGGER PAYLOAD EXPECT [extra deploy args] -> probe JSON
deploy_probe() {
    local file=$1 name=$2 trigger=$3 payload=$4 expect=$5
    shift 5
    nt_bg probe "$(probe_json "$HUB_PORT" "$trigger" "$payload" "$expect" 60 "$PIDS_FILE" "$WORK/deploy.log" \
        wait "$BIN" deploy "$file" --name "$name" --trigger "$trigger" --node b1 --key "$KEY" \
        --wait 0 -s "$HUB_URL" "$@")"
}

check_probe() { # JSON WHAT: dies on error or a failed command
    local err rc
    err=$(jget error <<<"$1")
    rc=$(jget cmd_rc <<<"$1")
    if [[ -n $err || (-n $rc && $rc != 0) ]]; then
        tail -n 30 "$WORK/deploy.log" "$WORK/b1.log" >&2
        die "$2: $1"
    fi
}

# from_cache NAME -> compiled_from_cache of that agent on b1 (asked over the hub)
from_cache() {
    nt ctl "$HUB_PORT" b1 agents | "$PY" -c 'import json,sys
for a in json.load(sys.stdin):
    if a["name"] == sys.argv[1]: print(a.get("compiled_from_cache"), a.get("state"))' "$1"
}

# undeploy NAME: removes the deployment and waits (up to 20 s) until b1 no longer lists it
undeploy() {
    local i
    "$BIN" undeploy "$1" --node b1 -s "$HUB_URL" >>"$WORK/deploy.log" 2>&1 || die "undeploy $1"
    for ((i = 0; i < 100; i++)); do
        nt ctl "$HUB_PORT" b1 agents | "$PY" -c 'import json,sys
sys.exit(any(a["name"] == sys.argv[1] for a in json.load(sys.stdin)))' "$1" && return 0
        sleep 0.2
    done
    die "b1 still lists $1 20 s after undeploy"
}

# ---------------------------------------------------------------------------------------
# 1. Deploy → first reply
declare -A T1
ROWS1=""
for mod in echo threshold; do
    for ((r = 1; r <= RUNS; r++)); do
        file=$WORK/mods/$mod-$r.wasm
        nt custom "$DIST/$mod.wasm" "$file" "run-$r"
        if [[ $mod == threshold ]]; then
            payload=$THRESHOLD_PAYLOAD expect='"mean"'
            extra=(--config limit=50 --allow-publish 'alerts.>')
        else
            payload=ping-$r expect=ping-$r
            extra=()
        fi
        a=${mod}${r}new b=${mod}${r}cached
        J=$(deploy_probe "$file" "$a" "ship.$a" "$payload" "$expect" "${extra[@]}")
        check_probe "$J" "deploy $a"
        new_ms=$(jget ms_all <<<"$J")
        new_cmd=$(jget cmd_ms <<<"$J")
        new_cache=$(from_cache "$a")
        J=$(deploy_probe "$file" "$b" "ship.$b" "$payload" "$expect" "${extra[@]}")
        check_probe "$J" "deploy $b"
        cached_ms=$(jget ms_all <<<"$J")
        cached_cmd=$(jget cmd_ms <<<"$J")
        cached_cache=$(from_cache "$b")
        T1[$mod.new]+=" $new_ms"
        T1[$mod.cached]+=" $cached_ms"
        ROWS1+="| $mod | $r | $new_ms | $new_cmd | $new_cache | $cached_ms | $cached_cmd | $cached_cache |"$'\n'
        log "1. $mod run $r: new digest $new_ms ms (deploy exited after $new_cmd ms; from_cache/state $new_cache), same digest $cached_ms ms ($cached_cache)"
        undeploy "$a"
        undeploy "$b"
    done
done
ECHO_BYTES=$(stat -c %s "$WORK/mods/echo-1.wasm")
THR_BYTES=$(stat -c %s "$WORK/mods/threshold-1.wasm")

# ---------------------------------------------------------------------------------------
# 2. Offline node converging after it returns
# nodes_status ID -> status of that node in `edgeleaf nodes --json`
nodes_status() {
    "$BIN" nodes --json -s "$HUB_URL" 2>/dev/null | "$PY" -c 'import json,sys
for r in json.load(sys.stdin):
    if r.get("node_id") == sys.argv[1]: print(r.get("status"))' "$1"
}
T2=""
ROWS2=""
for ((r = 1; r <= RUNS; r++)); do
    stop_node b1
    t_stop=$EPOCHREALTIME
    st=""
    for ((i = 0; i < 150; i++)); do   # up to ~30 s
        st=$(nodes_status b1)
        [[ $st == offline ]] && break
        sleep 0.2
    done
    [[ $st == offline ]] || die "b1 not shown offline 30 s after it stopped (status: $st)"
    offline_after=$(awk -v a="$t_stop" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    file=$WORK/mods/echo-off-$r.wasm
    nt custom "$DIST/echo.wasm" "$file" "offline-$r"
    name=off$r
    out=$("$BIN" deploy "$file" --name "$name" --trigger "ship.$name" --node b1 --key "$KEY" --wait 0 -s "$HUB_URL" 2>&1) \
        || { echo "$out" >&2; die "deploy to the offline node"; }
    J=$(start_node_probe b1 "ship.$name" "$HUB_PORT" "ping-$r" "ping-$r")
    [[ -z $(jget error <<<"$J") ]] || { tail -n 30 "$WORK/b1.log" >&2; die "offline run $r: $J"; }
    ms=$(jget ms_all <<<"$J")
    T2+=" $ms"
    ROWS2+="| $r | ${offline_after} s | $ms | $(from_cache "$name") |"$'\n'
    log "2. run $r: shown offline ${offline_after} s after SIGTERM; first reply $ms ms after the node was spawned"
    undeploy "$name"
done

# ---------------------------------------------------------------------------------------
# 3. Restart to serving with 10 deployed agents
SUBJ10=$(printf 't.a%d,' 0 1 2 3 4 5 6 7 8 9)
SUBJ10=${SUBJ10%,}
for i in 0 1 2 3 4 5 6 7 8 9; do
    "$BIN" deploy "$DIST/echo.wasm" --name "a$i" --trigger "t.a$i" --node b1 --key "$KEY" --wait 0 -s "$HUB_URL" \
        >>"$WORK/deploy.log" 2>&1 || die "deploy a$i"
done
J=$(nt_bg probe "$(probe_json "$HUB_PORT" "$SUBJ10" ping "" 60 "$PIDS_FILE" "")")
[[ -z $(jget error <<<"$J") ]] || die "10 agents not all answering: $J"
log "3. 10 agents deployed, all answering $(jget ms_all <<<"$J") ms after the last deploy returned"

# cached_count PORT -> "<agents compiled from cache>/<agents>" on b1
cached_count() {
    nt ctl "$1" b1 agents | "$PY" -c 'import json,sys
a = json.load(sys.stdin)
print("%d/%d" % (sum(1 for x in a if x.get("compiled_from_cache")), len(a)))'
}
T3ON="" T3OFF=""
ROWS3=""
for ((r = 1; r <= RUNS; r++)); do
    stop_node b1
    : >"$WORK/b1.restart.log"
    J=$(start_node_probe b1 "$SUBJ10" "$HUB_PORT")
    [[ -z $(jget error <<<"$J") ]] || { tail -n 30 "$WORK/b1.log" >&2; die "restart run $r (hub up): $J"; }
    on=$(jget ms_all <<<"$J")
    on_first=$("$PY" -c 'import json,sys; print(min(json.loads(sys.argv[1])["ms"].values()))' "$J")
    cached=$(cached_count "$HUB_PORT")

    # (b) hub killed before the restart; requests on the node's leaf port
    stop_node b1
    kill_hub
    J=$(start_node_probe b1 "$SUBJ10" "$LEAF_PORT")
    [[ -z $(jget error <<<"$J") ]] || { tail -n 30 "$WORK/b1.log" >&2; die "restart run $r (hub down): $J"; }
    off=$(jget ms_all <<<"$J")
    off_first=$("$PY" -c 'import json,sys; print(min(json.loads(sys.argv[1])["ms"].values()))' "$J")
    cached_off=$(cached_count "$LEAF_PORT")
    start_hub
    J=$(nt_bg probe "$(probe_json "$HUB_PORT" "$SUBJ10,edgeleaf.ctl.b1.info" ping "" 60 "$PIDS_FILE" "")")
    [[ -z $(jget error <<<"$J") ]] || die "after the hub restart, b1 not reachable from the hub: $J"
    relink=$(jget ms_all <<<"$J")
    T3ON+=" $on" T3OFF+=" $off"
    ROWS3+="| $r | $on_first | $on | $cached | $off_first | $off | $cached_off | $relink |"$'\n'
    log "3. run $r: all 10 answering after $on ms (hub up), $off ms (hub down, leaf port); hub restart → reachable again after $relink ms"
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_END=$(uptime)
WARNINGS=$(node_warnings "$WORK"/b1.log)

read -r e1 e2 e3 <<<"$(nt stats ${T1[echo.new]})"
read -r c1 c2 c3 <<<"$(nt stats ${T1[echo.cached]})"
read -r h1 h2 h3 <<<"$(nt stats ${T1[threshold.new]})"
read -r k1 k2 k3 <<<"$(nt stats ${T1[threshold.cached]})"
read -r o1 o2 o3 <<<"$(nt stats $T2)"
read -r n1 n2 n3 <<<"$(nt stats $T3ON)"
read -r f1 f2 f3 <<<"$(nt stats $T3OFF)"

cat <<EOF
## Shipping — $(date -u '+%Y-%m-%d %H:%M UTC')

Command: \`$CMDLINE\` (from the repository root)

- edgeleaf: $BIN_NOTE
- nats-server: $NATS_VERSION; host: $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)
- load average (1/5/15 min) at start: $LOAD_START; at end: $LOAD_END
- one node (\`b1\`, spawned leaf, heartbeat 1 s, durability batch) and one hub, all on loopback;
  client: raw-protocol Python client on the hub (or on the leaf where said), polling every ~5 ms
  (200 ms request timeout; no_responders, so an unserved subject answers 503 at once)

| figure ($RUNS runs) | min | median | max |
|---|---|---|---|
| deploy → first reply, echo.wasm ($ECHO_BYTES B), new digest (upload, fetch, compile) | $e1 ms | $e2 ms | $e3 ms |
| deploy → first reply, echo.wasm, same digest again (new name; local copy + compiled cache) | $c1 ms | $c2 ms | $c3 ms |
| deploy → first reply, threshold.wasm ($THR_BYTES B), new digest | $h1 ms | $h2 ms | $h3 ms |
| deploy → first reply, threshold.wasm, same digest again (new name) | $k1 ms | $k2 ms | $k3 ms |
| offline node: node start → first reply of an agent deployed while it was off (echo, new digest) | $o1 ms | $o2 ms | $o3 ms |
| restart → all 10 deployed agents answer, hub up, client on the hub | $n1 ms | $n2 ms | $n3 ms |
| restart → all 10 deployed agents answer, hub killed, client on the node's leaf | $f1 ms | $f2 ms | $f3 ms |

Deploy rows time from just before \`edgeleaf deploy FILE --name X --trigger T --node b1 --key K --wait 0 -s <hub>\`
is spawned (CLI start, upload, signed KV write included) to the first good reply on T.
"new digest": the example with a custom section appended (same code, new sha256), so it
is uploaded, fetched by the node and compiled; "same digest": the same file deployed at
once under a second name and trigger. Restart rows time from spawning \`edgeleaf node\`
(its leaf nats-server start and, hub up, the leaf→hub link included).

Per run (ms; "deploy CLI" = when the deploy process exited; "cache" = \`compiled_from_cache\`
and state that b1 reported for the agent afterwards):

| module | run | new digest → reply | deploy CLI | cache | same digest → reply | deploy CLI | cache |
|---|---|---|---|---|---|---|---|
${ROWS1}
| offline run | shown offline after SIGTERM | node start → first reply (ms) | cache |
|---|---|---|---|
${ROWS2}
| 10-agent run | hub up: first agent | hub up: all 10 | compiled from cache | hub down: first | hub down: all 10 | compiled from cache | hub restarted → reachable from the hub |
|---|---|---|---|---|---|---|---|
${ROWS3}
EOF
if [[ -n $WARNINGS ]]; then
    printf '\nWarnings and errors logged by node b1 (count, message):\n\n```\n%s\n```\n' "$WARNINGS"
fi
printf '\n`uptime` at start: %s\n`uptime` at end:   %s\n' "$UPTIME_START" "$UPTIME_END"
STATUS=0
