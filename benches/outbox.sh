#!/usr/bin/env bash
# Store-and-forward outbox: replay after a hub outage, and what `sync` durability costs.
#
#   cargo build --release && bash benches/outbox.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub, leafnode listener), runs `edgeleaf hub init`, and runs nodes with
# `edgeleaf node -c` (spawned leaf, heartbeat 1 s), each with a static echo agent
# ([[agents]] in its config, the agent's default limits: 4 concurrent instances).
#
#  1. Replay after an outage (node b1, durability batch), one scenario per N:W in
#     $SCENARIOS, each with a fresh node process and state dir: the hub nats-server is
#     killed (SIGKILL, by pid); N messages are published to load.echo on the node's leaf
#     port without a reply subject — W = 0: in one burst, as fast as the socket takes
#     them; W > 0: paced so that at most W are published but not yet appended; the
#     node's outbox depth (ctl.b1.outbox, asked on the leaf) is polled every 50 ms until
#     it reaches N (or stops moving for 5 s: messages lost before the outbox). Append
#     rate = depth / (first publish → depth reached). VmRSS of the node before the
#     outage and with the backlog. Then the hub is started again with the same config
#     and store; replay = hub process start → depth 0, and the rate from the first entry
#     forwarded. The hub's EDGELEAF_TELEMETRY stream is counted before and after.
#  2. Echo latency and throughput through the leaf, client on the hub: node bb
#     (durability batch) and node bs (durability sync) run side by side, each on its
#     own leaf, and are measured alternately: 2,000 sequential requests (after 200
#     warm-up ones; p50/p99), then replies/s with 16 and with 64 requests in flight
#     for 5 s each. The plain async-nats responder and the in-process agent pool are
#     measured by `cargo bench --bench agents` (benches/agents.rs) and not repeated.
#
# The load generator is a single-threaded raw-protocol Python client (standard
# library), so absolute figures are client-bound: compare the ratios of one run.
# Progress goes to stderr, the Markdown summary to stdout. Every process started here is
# stopped by pid on exit. Knobs: SCENARIOS="10000:0 100000:2000 100000:0", SEQ=2000,
# WINDOW=5, KEEP=1, NODE_LOG (node log filter), BIN_SRC, NATS_SERVER.

BENCH_NAME=outbox
source "$(dirname "$0")/lib.sh"
SCENARIOS=${SCENARIOS:-10000:0 100000:2000 100000:0}
SEQ=${SEQ:-2000}
WINDOW=${WINDOW:-5}
CMDLINE="bash benches/outbox.sh"
[[ $SCENARIOS == "10000:0 100000:2000 100000:0" && $SEQ == 2000 && $WINDOW == 5 ]] || CMDLINE="SCENARIOS='$SCENARIOS' SEQ=$SEQ WINDOW=$WINDOW $CMDLINE"
PAYLOAD=edgeleaf-bench16   # 16 bytes

log "work dir $WORK; $BIN_NOTE"
start_hub
hub_init
gen_key
log "hub pid $HUB_PID on 127.0.0.1:$HUB_PORT (leafnodes $HUB_LEAF_PORT)"

static_echo() { # TRIGGER -> [[agents]] table
    printf '[[agents]]\nname = "echo"\nwasm = "%s"\ntriggers = ["%s"]\n' "$DIST/echo.wasm" "$1"
}
leaf_pid_of() { head -n1 "$WORK/$1/leaf/nats-server.pid" 2>/dev/null || true; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f×", a / b }'; }

# ---------------------------------------------------------------------------------------
# 1. Replay after an outage
B1_PORT=$(nt ports 1)
write_node_conf b1 "$B1_PORT" batch "$(static_echo load.echo)"
echo_counts() { # PORT NODE -> "invocations failures" of its echo agent
    nt ctl "$1" "$2" agents | "$PY" -c 'import json,sys
a = [x for x in json.load(sys.stdin) if x["name"] == "echo"][0]
print(a["invocations"], a["failures"])'
}
stream_b1() { nt streamcount "$HUB_PORT" EDGELEAF_TELEMETRY 'edgeleaf.res.b1.>' | jget messages; }

ROWS1=""
DETAIL1=""
CLI_OUT=""
for sc in $SCENARIOS; do
    N=${sc%%:*} W=${sc#*:}
    if [[ $W == 0 ]]; then how="burst"; else how="paced (≤ $W not yet appended)"; fi
    # a fresh node and state dir for every scenario, so RSS starts from the same point
    if [[ -n $(node_pid b1) ]]; then stop_node b1; fi
    rm -rf "$WORK/b1"
    mkdir -p "$WORK/b1"
    J=$(start_node_probe b1 load.echo "$HUB_PORT" "$PAYLOAD" "$PAYLOAD")
    [[ -z $(jget error <<<"$J") ]] || { tail -n 30 "$WORK/b1.log" >&2; die "node b1 did not serve load.echo: $J"; }
    B1_PID=$(node_pid b1)
    J=$(nt_bg waitdepth "$B1_PORT" b1 le 0 60 0.05)
    [[ -z $(jget error <<<"$J") ]] || die "b1 outbox not empty before the outage: $J"
    sleep 1
    rss0=$(nt rss "$B1_PID")
    leaf0=$(nt rss "$(leaf_pid_of b1)")
    read -r inv0 fail0 <<<"$(echo_counts "$B1_PORT" b1)"
    stored0=$(stream_b1)

    log "1. N=$N $how: node b1 pid $B1_PID (fresh state dir, RSS $rss0 KiB); killing the hub (pid $HUB_PID)"
    kill_hub
    F=$(nt_bg flood "$B1_PORT" load.echo "$N" "$PAYLOAD" b1 "$W")
    t_pub=$(jget first_publish_wall <<<"$F")
    # until depth N; a depth that stops moving for 5 s ends the wait (messages lost)
    J=$(nt_bg waitdepth "$B1_PORT" b1 ge "$N" 600 0.05 "$t_pub" 5)
    depth=$(jget last.depth <<<"$J")
    bytes=$(jget last.bytes <<<"$J")
    dropped=$(jget last.dropped <<<"$J")
    if [[ -n $(jget error <<<"$J") ]]; then
        append_ms=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["samples"][-1][0])' "$J")
        note="**only $depth of $N reached the outbox**"
        log "1. N=$N: depth stopped at $depth: $(jget error <<<"$J")"
    else
        append_ms=$(jget ms <<<"$J")
        note="$depth"
    fi
    sleep 1
    rssN=$(nt rss "$B1_PID")
    leafN=$(nt rss "$(leaf_pid_of b1)")
    hwmN=$(awk '/^VmHWM:/ {print $2}' "/proc/$B1_PID/status")
    read -r inv1 fail1 <<<"$(echo_counts "$B1_PORT" b1)"
    CLI=$("$BIN" outbox --node b1 --json -s "nats://127.0.0.1:$B1_PORT" 2>&1 || true)
    CLI_OUT+="N=$N $how, hub down, after the wait: \$ edgeleaf outbox --node b1 --json -s nats://127.0.0.1:<leaf port>"$'\n'"$CLI"$'\n'
    log "1. N=$N: depth $depth ($bytes bytes) ${append_ms} ms after the first publish (publisher done in $(jget ms_to_pong <<<"$F") ms); RSS $rss0 → $rssN KiB"

    log "1. N=$N: restarting the hub"
    t_hub=$EPOCHREALTIME
    start_hub
    J=$(nt_bg waitdepth "$B1_PORT" b1 le 0 900 0.05 "$t_hub" 60)
    [[ -z $(jget error <<<"$J") ]] || { tail -n 20 "$WORK/b1.log" >&2; die "N=$N: outbox did not drain: $J"; }
    drain_ms=$(jget ms <<<"$J")
    move_ms=$(jget first_move_ms <<<"$J")
    rssD=$(nt rss "$B1_PID")
    stored=$(( $(stream_b1) - stored0 ))

    inv=$((inv1 - inv0)) fails=$((fail1 - fail0))
    append_rate=$(awk -v n="$depth" -v ms="$append_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
    replay_rate=$(awk -v n="$depth" -v a="$move_ms" -v b="$drain_ms" 'BEGIN { if (b > a) printf "%.0f", n / ((b - a) / 1000); else print "n/a" }')
    replay_all=$(awk -v n="$depth" -v ms="$drain_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
    per100k=$(awk -v a="$rss0" -v b="$rssN" -v n="$depth" 'BEGIN { printf "%.1f", (b - a) / n * 100000 / 1024 }')
    ROWS1+="| $N, $how | $note ($(kib_mib $((bytes / 1024))) MiB, dropped $dropped) | $append_ms ms → **$append_rate/s** | $(kib_mib "$rss0") → $(kib_mib "$rssN") MiB (peak $(kib_mib "$hwmN")) → **$per100k MiB per 100k** | $move_ms ms | $drain_ms ms | **$replay_rate/s** ($replay_all/s from hub start) | $(kib_mib "$rssD") MiB | $stored |"$'\n'
    DETAIL1+="- N=$N $how: echo invocations while the hub was down: $inv (failed: $fails); publisher wrote everything in $(jget ms_to_pong <<<"$F") ms ($(jget pacing_polls <<<"$F") pacing polls); leaf nats-server VmRSS $(kib_mib "$leaf0") → $(kib_mib "$leafN") MiB"$'\n'
    log "1. N=$N: first entry forwarded $move_ms ms after the hub started, outbox empty after $drain_ms ms ($replay_rate/s); $stored new results from b1 in the stream"
done
SLOW=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/b1.log" | grep -c 'edgeleaf::connect: nats: slow consumers' || true)

# ---------------------------------------------------------------------------------------
# 2. Echo latency and throughput: batch vs sync durability, side by side
BB_PORT=$(nt ports 1)
write_node_conf bb "$BB_PORT" batch "$(static_echo lat.batch)"
J=$(start_node_probe bb lat.batch "$HUB_PORT" "$PAYLOAD" "$PAYLOAD")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/bb.log" >&2; die "node bb: $J"; }
BS_PORT=$(nt ports 1)
write_node_conf bs "$BS_PORT" sync "$(static_echo lat.sync)"
J=$(start_node_probe bs lat.sync "$HUB_PORT" "$PAYLOAD" "$PAYLOAD")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/bs.log" >&2; die "node bs: $J"; }
stop_node b1   # done with it; keeps the machine quieter
log "2. nodes bb (batch, pid $(node_pid bb)) and bs (sync, pid $(node_pid bs)) serving"

declare -A L
declare -A NODE_OF=([batch]=bb [sync]=bs)
declare -A PORT_OF=([batch]=$BB_PORT [sync]=$BS_PORT)
RESTARTS=""
# serving MODE: does the node answer one request within 2 s?
serving() { nt request "$HUB_PORT" "lat.$1" "$PAYLOAD" 2 >/dev/null 2>&1; }
# ensure_serving MODE STEP: restarts the node if it stopped answering (and records it)
ensure_serving() {
    local mode=$1 step=$2 id=${NODE_OF[$1]} ob J
    serving "$mode" && return 0
    ob=$(nt outbox "${PORT_OF[$mode]}" "$id" 2>/dev/null || echo "no answer")
    log "2. node $id ($mode) does not answer on lat.$mode after: $step; outbox: $ob; restarting it"
    stop_node "$id"
    RESTARTS+="- node $id ($mode) stopped answering on \`lat.$mode\` after: $step. Its outbox then (ctl.$id.outbox): \`$ob\`. Stop: $LAST_STOP. Restarted with the same state dir."$'\n'
    J=$(start_node_probe "$id" "lat.$mode" "$HUB_PORT" "$PAYLOAD" "$PAYLOAD")
    [[ -z $(jget error <<<"$J") ]] || die "node $id did not come back: $J"
}
for mode in batch sync; do
    log "2. sequential, $mode: 200 warm-up + $SEQ requests"
    L[$mode.seq]=$(nt_bg latency "$HUB_PORT" "lat.$mode" "$PAYLOAD" "$SEQ" 200 120)
    log "   ${L[$mode.seq]}"
done
for k in 16 64; do
    for mode in batch sync; do
        ensure_serving "$mode" "the measurement before $k in flight"
        log "2. $k in flight, $mode, ${WINDOW} s"
        L[$mode.$k]=$(nt_bg throughput "$HUB_PORT" "lat.$mode" "$PAYLOAD" "$k" "$WINDOW")
        log "   ${L[$mode.$k]}"
    done
done
for mode in batch sync; do ensure_serving "$mode" "64 in flight (the last measurement)"; done
OB_BB=$(nt outbox "$BB_PORT" bb)
OB_BS=$(nt outbox "$BS_PORT" bs)
stop_node bs; STOP_BS=$LAST_STOP
stop_node bb; STOP_BB=$LAST_STOP

errs() { # JSON -> error summary
    "$PY" -c 'import json,sys
d = json.loads(sys.argv[1]); e = d.get("errors") or {}
s = ", ".join(f"{k} {v}" for k, v in e.items()) or "0"
if d.get("stalled"):
    lr = d.get("last_reply_s")
    s += "; **stalled**" + (" (last reply at %s s)" % lr if lr is not None else "")
print(s)' "$1"
}
g() { jget "$2" <<<"${L[$1]}"; }
ROWS2=""
for mode in batch sync; do
    ROWS2+="| $mode | $(g $mode.seq n) | $(g $mode.seq p50_us) | $(g $mode.seq p99_us) | $(g $mode.seq mean_us) | $(errs "${L[$mode.seq]}") | $(g $mode.16 per_s) | $(g $mode.16 p50_us) / $(g $mode.16 p99_us) | $(errs "${L[$mode.16]}") | $(g $mode.64 per_s) | $(g $mode.64 p50_us) / $(g $mode.64 p99_us) | $(errs "${L[$mode.64]}") |"$'\n'
done
ROWS2+="| sync / batch | | $(ratio "$(g sync.seq p50_us)" "$(g batch.seq p50_us)") | $(ratio "$(g sync.seq p99_us)" "$(g batch.seq p99_us)") | $(ratio "$(g sync.seq mean_us)" "$(g batch.seq mean_us)") | | $(ratio "$(g sync.16 per_s)" "$(g batch.16 per_s)") | | | $(ratio "$(g sync.64 per_s)" "$(g batch.64 per_s)") | | |"$'\n'

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_END=$(uptime)
WARNINGS=$(node_warnings "$WORK"/b1.log "$WORK"/bb.log "$WORK"/bs.log)

cat <<EOF
## Outbox — $(date -u '+%Y-%m-%d %H:%M UTC')

Command: \`$CMDLINE\` (from the repository root)

- edgeleaf: $BIN_NOTE
- nats-server: $NATS_VERSION; host: $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)
- load average (1/5/15 min) at start: $LOAD_START; at end: $LOAD_END
- all on loopback; nodes with a spawned leaf, heartbeat 1 s, static echo agent (default limits:
  4 concurrent instances, excess requests wait up to 1 s, then \`busy\`), outbox defaults
  (max_bytes 64 MiB, drop_oldest, flush_interval 100 ms)

### Replay after a hub outage (node b1, durability batch)

Per scenario a fresh \`edgeleaf node\` with a fresh state dir; hub nats-server killed (SIGKILL);
N messages (16 B, no reply subject) published to \`load.echo\` on the node's leaf port by a
raw-protocol Python client, in one burst or paced (at most W published but not yet in the
outbox); outbox depth polled every 50 ms with a request on \`edgeleaf.ctl.b1.outbox\` on the leaf
(what \`edgeleaf outbox --node b1 -s <leaf>\` asks) until N, or until it stopped moving for 5 s.
Append: first publish → depth reached. RSS: VmRSS of \`edgeleaf node\` 1 s before the outage
and 1 s after the depth was reached (extra RSS scaled to 100k entries). Replay: hub restarted
(same config and store) → depth 0; the rate counts from the first entry forwarded. Last
column: results from b1 added to the hub's EDGELEAF_TELEMETRY stream. In a burst every message
becomes a task at once (each waits up to 1 s for one of the agent's 4 instance slots, then
fails \`busy\`, and its result is recorded either way), so the RSS of burst rows includes those
tasks; the paced row is the closer estimate of what the backlog itself costs.

| N, publishing | depth reached | append: first publish → depth | node VmRSS before → with backlog | hub start → first forwarded | hub start → depth 0 | replay rate | node VmRSS after replay | stored on the hub |
|---|---|---|---|---|---|---|---|---|
${ROWS1}
${DETAIL1}- NATS client "slow consumer" events in node b1's log over all scenarios (logged at debug by edgeleaf, made visible here with EDGELEAF_LOG=$NODE_LOG): $SLOW

\`\`\`
${CLI_OUT}\`\`\`

### Echo through the leaf, client on the hub: durability batch vs sync

Nodes bb (\`durability = "batch"\`) and bs (\`durability = "sync"\`) side by side, each with its
own leaf; requests of 16 B from a client on the hub, measured alternately. **The client is a
single-threaded Python raw-protocol client, so absolute figures are bound by it; compare the
ratio.** The plain async-nats responder and the in-process pool: \`cargo bench --bench agents\`.

| durability | seq n | seq p50 µs | seq p99 µs | seq mean µs | seq errors | 16 in flight req/s | p50 / p99 µs | errors | 64 in flight req/s | p50 / p99 µs | errors |
|---|---|---|---|---|---|---|---|---|---|---|---|
${ROWS2}
Sequential: $SEQ requests after 200 warm-up, one at a time (2 s timeout; three timeouts in
a row end the series as stalled). In flight: K requests kept outstanding on one connection
for ${WINDOW} s; req/s = good replies / ${WINDOW} s; "stalled": no reply in the last second of
the window (a quarter of it if shorter); "no reply": requests still unanswered 5 s after the window. Before each
in-flight measurement the node must answer one request within 2 s, else it is stopped
(SIGTERM, SIGKILL after 10 s) and restarted on the same state dir. Outbox at the end: bb
\`$OB_BB\`; bs \`$OB_BS\`. Final stop: bb $STOP_BB; bs $STOP_BS.
EOF
if [[ -n $RESTARTS ]]; then
    printf '\nRestarts during this section:\n\n%s' "$RESTARTS"
fi
if [[ -n $WARNINGS ]]; then
    printf '\nWarnings, errors and NATS client events (slow consumer) logged by the nodes (count, message):\n\n```\n%s\n```\n' "$WARNINGS"
fi
printf '\n`uptime` at start: %s\n`uptime` at end:   %s\n' "$UPTIME_START" "$UPTIME_END"
STATUS=0
