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
#     requests on the node's leaf port as its local leaf user (restart from local state
#     alone).
#  4. reconciliation with KEYS (1,000) keys in the deployments bucket, none for b1: the
#     bucket is filled by one `edgeleaf deploy echo.wasm --name echo --node other0 ...
#     --node other<KEYS-1> --wait 0` (one key per --node: node.other<i>.echo; the time is
#     reported), then (a) deploy → first reply on b1 as in 1 (echo, new digest, RUNS
#     runs), and (b) the CPU time (utime+stime from /proc/<pid>/stat) that node b1 and its
#     leaf nats-server use while BURST (100) more deployments to other nodes are written
#     (one deploy with BURST --node flags, then SETTLE s), against an idle window of the
#     same length right after it (heartbeats, resyncs: the node's floor). b1 reads only
#     node.b1.*, all.* and its tags' keys, so the two should match.
#
# The client is a raw-protocol Python client (standard library): it sends one request
# per pending subject (200 ms timeout; with no_responders a subject nobody serves yet
# answers 503 at once), pauses 5 ms, and repeats, so times have ~5-10 ms resolution.
# Progress goes to stderr, the Markdown summary to stdout. Every process started here is
# stopped by pid on exit. Knobs: RUNS=5, KEEP=1 (keep the work dir), BIN_SRC, NATS_SERVER,
# KEYS=1000 (keys for other nodes in section 4; 0 skips section 4), BURST=100, SETTLE=2.

KEYS=${KEYS:-1000}
BURST=${BURST:-100}
SETTLE=${SETTLE:-2}
[[ $KEYS =~ ^[0-9]+$ && $BURST =~ ^[1-9][0-9]*$ && $SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] \
    || { echo "KEYS must be a number (0 skips section 4), BURST a positive number, SETTLE seconds" >&2; exit 2; }

BENCH_NAME=shipping
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
CMDLINE="bash benches/shipping.sh"
[[ $KEYS == 1000 && $BURST == 100 && $SETTLE == 2 ]] || CMDLINE="KEYS=$KEYS BURST=$BURST SETTLE=$SETTLE $CMDLINE"
[[ $RUNS == 5 ]] || CMDLINE="RUNS=$RUNS $CMDLINE"

# The node's spawned leaf demands a login (README, "Local clients log in"); lib.sh's
# client sends none. Its copy in $WORK logs in as user:password from NT_LOGIN when that
# is set (only for the calls on b1's leaf port, as b1's local user).
"$PY" - "$WORK/nt.py" <<'PY' || die "cannot add the login to $WORK/nt.py"
import sys
p = sys.argv[1]
s = open(p).read()
old = r'''"name":"bench-py"}\r\n'''
new = r'''"name":"bench-py"' + nt_login() + b'}\r\n'''
login = '''def nt_login():
    # CONNECT fields for NT_LOGIN=user:password (empty when unset)
    u, _, pw = os.environ.get("NT_LOGIN", "").partition(":")
    return (',"user":%s,"pass":%s' % (json.dumps(u), json.dumps(pw))).encode() if u else b""


class Nats:'''
if s.count(old) != 1 or s.count("class Nats:") != 1:
    sys.exit("nt.py: CONNECT line or class Nats not found as expected")
open(p, "w").write(s.replace(old, new).replace("class Nats:", login))
PY
# leaf_login ID -> user:password of node ID's local leaf user (from its state dir)
leaf_login() {
    "$PY" -c 'import json,sys
d = json.load(open(sys.argv[1]))
print("%s:%s" % (d.get("local_user", "local"), d["local_password"]))' "$WORK/$1/leaf-users.json" \
        || die "no local leaf user in $WORK/$1/leaf-users.json"
}

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
    login=$(leaf_login b1)
    J=$(NT_LOGIN=$login start_node_probe b1 "$SUBJ10" "$LEAF_PORT")
    [[ -z $(jget error <<<"$J") ]] || { tail -n 30 "$WORK/b1.log" >&2; die "restart run $r (hub down): $J"; }
    off=$(jget ms_all <<<"$J")
    off_first=$("$PY" -c 'import json,sys; print(min(json.loads(sys.argv[1])["ms"].values()))' "$J")
    cached_off=$(NT_LOGIN=$login cached_count "$LEAF_PORT")
    start_hub
    J=$(nt_bg probe "$(probe_json "$HUB_PORT" "$SUBJ10,edgeleaf.ctl.b1.info" ping "" 60 "$PIDS_FILE" "")")
    [[ -z $(jget error <<<"$J") ]] || die "after the hub restart, b1 not reachable from the hub: $J"
    relink=$(jget ms_all <<<"$J")
    T3ON+=" $on" T3OFF+=" $off"
    ROWS3+="| $r | $on_first | $on | $cached | $off_first | $off | $cached_off | $relink |"$'\n'
    log "3. run $r: all 10 answering after $on ms (hub up), $off ms (hub down, leaf port); hub restart → reachable again after $relink ms"
done

# ---------------------------------------------------------------------------------------
# 4. Reconciliation with KEYS keys for other nodes in the deployments bucket
CLK_TCK=$(getconf CLK_TCK)
# cpu_ms PID -> utime+stime of that process (all its threads) in ms
cpu_ms() { awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1000 / hz }' "/proc/$1/stat"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }   # ms since $1
# run_bg LOG CMD...: runs CMD in the background (output appended to LOG) so that the trap
# can stop it, waits for it, returns its status
run_bg() {
    local out=$1 pid rc=0
    shift
    "$@" >>"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    return "$rc"
}
# deploy_others NAME COUNT LOG: one deploy of echo.wasm as NAME to nodes other0 ..
# other<COUNT-1> (one key each), --wait 0; dies unless COUNT keys were reported written
deploy_others() {
    local name=$1 count=$2 out=$3 i nodes=() n
    for ((i = 0; i < count; i++)); do nodes+=(--node "other$i"); done
    : >"$out"
    run_bg "$out" "$BIN" deploy "$DIST/echo.wasm" --name "$name" --trigger "t.$name" "${nodes[@]}" \
        --key "$KEY" --wait 0 -s "$HUB_URL" || { tail -n 20 "$out" >&2; die "deploy $name to $count other nodes"; }
    n=$(grep -c "^deployed $name version .* to node\.other" "$out" || true)
    [[ $n == "$count" ]] || { tail -n 20 "$out" >&2; die "deploy $name: $n keys written, expected $count"; }
}
# bucket_subjects -> subjects in the hub's KV_EDGELEAF_DEPLOYMENTS stream (keys, delete markers included)
bucket_subjects() {
    nt streamcount "$HUB_PORT" KV_EDGELEAF_DEPLOYMENTS '$KV.EDGELEAF_DEPLOYMENTS.>' | "$PY" -c 'import json,sys
print(len(json.load(sys.stdin)["subjects"]))'
}
# b1_agents -> number of agents b1 runs (asked over the hub)
b1_agents() { nt ctl "$HUB_PORT" b1 agents | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

if ((KEYS > 0)); then
    keys_before=$(bucket_subjects)
    t0=$EPOCHREALTIME
    deploy_others echo "$KEYS" "$WORK/fill.log"
    FILL_MS=$(since "$t0")
    keys_after=$(bucket_subjects)
    ((keys_after >= keys_before + KEYS)) || die "bucket holds $keys_after subjects after the fill, expected at least $((keys_before + KEYS))"
    FILL_RATE=$(awk -v n="$KEYS" -v ms="$FILL_MS" 'BEGIN { printf "%.0f", n * 1000 / ms }')
    B1_AGENTS=$(b1_agents)
    log "4. filled the bucket: $KEYS keys (node.other0.echo .. node.other$((KEYS - 1)).echo) in $FILL_MS ms with one deploy; $keys_after subjects in the bucket, b1 runs $B1_AGENTS agents"

    # (a) deploy → first reply on b1, as in section 1 (echo, new digest)
    T4="" T4CMD=""
    ROWS4=""
    for ((r = 1; r <= RUNS; r++)); do
        file=$WORK/mods/echo-keys-$r.wasm
        nt custom "$DIST/echo.wasm" "$file" "keys-$r"
        name=keys${r}new
        J=$(deploy_probe "$file" "$name" "ship.$name" "ping-$r" "ping-$r")
        check_probe "$J" "deploy $name with $KEYS keys in the bucket"
        ms=$(jget ms_all <<<"$J")
        cmd=$(jget cmd_ms <<<"$J")
        T4+=" $ms" T4CMD+=" $cmd"
        ROWS4+="| $r | $ms | $cmd | $(from_cache "$name") |"$'\n'
        log "4a. run $r: new digest $ms ms with $KEYS keys for other nodes in the bucket (deploy exited after $cmd ms)"
        undeploy "$name"
    done

    # (b) b1's CPU while BURST deployments to other nodes are written, against idle
    B1_PID=$(node_pid b1)
    [[ -n $B1_PID ]] || die "node b1 is not running"
    B1_LEAF_PID=$(head -n1 "$WORK/b1/leaf/nats-server.pid")
    [[ $(cmdline_of "$B1_LEAF_PID") == *"$WORK"* ]] || die "b1's leaf (pid $B1_LEAF_PID) is not running"
    T4BN="" T4IN="" T4BL="" T4IL=""
    ROWS4C=""
    for ((r = 1; r <= RUNS; r++)); do
        # written window: the deploy, then SETTLE s for whatever the node does about it
        t0=$EPOCHREALTIME n0=$(cpu_ms "$B1_PID") l0=$(cpu_ms "$B1_LEAF_PID")
        deploy_others "burst$r" "$BURST" "$WORK/burst-$r.log"
        dep_ms=$(since "$t0")
        sleep "$SETTLE"
        n1=$(cpu_ms "$B1_PID") l1=$(cpu_ms "$B1_LEAF_PID")
        win_ms=$(since "$t0")
        # idle window of the same length, nothing written
        t1=$EPOCHREALTIME n2=$(cpu_ms "$B1_PID") l2=$(cpu_ms "$B1_LEAF_PID")
        sleep "$(awk -v ms="$win_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
        n3=$(cpu_ms "$B1_PID") l3=$(cpu_ms "$B1_LEAF_PID")
        idle_ms=$(since "$t1")
        alive "$B1_PID" || die "node b1 exited during section 4"
        bn=$((n1 - n0)) idn=$((n3 - n2)) bl=$((l1 - l0)) il=$((l3 - l2))
        T4BN+=" $bn" T4IN+=" $idn" T4BL+=" $bl" T4IL+=" $il"
        ROWS4C+="| $r | $dep_ms | $win_ms | $bn | $bl | $idle_ms | $idn | $il |"$'\n'
        log "4b. run $r: $BURST deployments to other nodes written in $dep_ms ms; b1 CPU over $win_ms ms: $bn ms (leaf $bl ms); idle $idle_ms ms: $idn ms (leaf $il ms)"
    done
    KEYS_END=$(bucket_subjects)
    B1_AGENTS_END=$(b1_agents)
    [[ $B1_AGENTS_END == "$B1_AGENTS" ]] || die "b1 runs $B1_AGENTS_END agents after section 4, $B1_AGENTS before"
fi

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
if ((KEYS > 0)); then
    read -r q1 q2 q3 <<<"$(nt stats $T4)"
    read -r qc1 qc2 qc3 <<<"$(nt stats $T4CMD)"
    read -r bn1 bn2 bn3 <<<"$(nt stats $T4BN)"
    read -r in1 in2 in3 <<<"$(nt stats $T4IN)"
    read -r bl1 bl2 bl3 <<<"$(nt stats $T4BL)"
    read -r il1 il2 il3 <<<"$(nt stats $T4IL)"
    cat <<EOF

### Reconciliation with $KEYS keys for other nodes in the deployments bucket

Filling: one \`edgeleaf deploy echo.wasm --name echo --node other0 … --node other$((KEYS - 1)) --key K --wait 0 -s <hub>\`
wrote $KEYS keys (\`node.other<i>.echo\`, none aimed at b1) in $FILL_MS ms ($FILL_RATE keys/s; the CLI reads
each key's history to pick the version, then writes the keys one by one). b1 ran its
$B1_AGENTS agents before and after; at the end the bucket held $KEYS_END subjects (keys,
delete markers included).

| figure ($RUNS runs) | min | median | max |
|---|---|---|---|
| deploy → first reply on b1, echo.wasm, new digest, $KEYS keys for other nodes in the bucket | $q1 ms | $q2 ms | $q3 ms |
| same runs: deploy CLI exited (it also lists every key of the bucket to pick the version) | $qc1 ms | $qc2 ms | $qc3 ms |
| for comparison, section 1 (bucket nearly empty): deploy → first reply, echo.wasm, new digest | $e1 ms | $e2 ms | $e3 ms |
| b1 CPU (utime+stime) while $BURST deployments to other nodes are written (deploy + ${SETTLE} s) | $bn1 ms | $bn2 ms | $bn3 ms |
| b1 CPU, idle window of the same length right after (nothing written) | $in1 ms | $in2 ms | $in3 ms |
| b1's leaf nats-server CPU, $BURST deployments written | $bl1 ms | $bl2 ms | $bl3 ms |
| b1's leaf nats-server CPU, idle window | $il1 ms | $il2 ms | $il3 ms |

CPU comes from \`/proc/<pid>/stat\` (all threads; resolution $((1000 / CLK_TCK)) ms) at each window's
ends. A "written" window runs one \`edgeleaf deploy echo.wasm --name burst<run> --node other0 …
--node other$((BURST - 1)) --key K --wait 0\` (new keys \`node.other<i>.burst<run>\`), then waits ${SETTLE} s;
the idle window that follows has the same length, so the heartbeat (1 s) and a resync (every
30 s, when one falls inside) set the node's floor in both.

Per run (ms):

| deploy run | new digest → reply | deploy CLI | cache |
|---|---|---|---|
${ROWS4}
| CPU run | $BURST deploys written in | window | b1 CPU | leaf CPU | idle window | b1 CPU, idle | leaf CPU, idle |
|---|---|---|---|---|---|---|---|
${ROWS4C}
EOF
fi
if [[ -n $WARNINGS ]]; then
    printf '\nWarnings and errors logged by node b1 (count, message):\n\n```\n%s\n```\n' "$WARNINGS"
fi
printf '\n`uptime` at start: %s\n`uptime` at end:   %s\n' "$UPTIME_START" "$UPTIME_END"
STATUS=0
