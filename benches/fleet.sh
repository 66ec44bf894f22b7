#!/usr/bin/env bash
# A fleet on one hub: how `edgeleaf nodes` and the hub fare with thousands of nodes.
#
#   cargo build --release && bash benches/fleet.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub) and `edgeleaf hub init`, runs one real node (b1, spawned leaf) just long enough
# to take one of its heartbeats as the template, then, for each fleet size in SIZES
# (default "1000 10000"), simulates that many nodes: one raw-protocol Python client
# publishes each simulated node's heartbeat (the template with its own node_id, name,
# seq, uptime and interval_s) to edgeleaf.hb.<id> every INTERVAL (10 s, the node's default),
# spread evenly over the interval. Simulated nodes only heartbeat: they hold no KV
# watch and write no status (see the note printed at the end).
#
# Measured per size, after WARM (one interval) of heartbeats:
#  - `edgeleaf nodes --json -s <hub>`: wall time of RUNS (5) runs (spawn to exit),
#    min/median/max, and the rows it printed (every simulated node, online);
#  - the hub nats-server: RSS, and CPU (utime+stime from /proc) per second while the
#    fleet heartbeats (over one interval, no `nodes` running);
#  - the heartbeat stream's size on the hub.
#
# Progress goes to stderr, the Markdown summary to stdout. Every process started here is
# stopped by pid on exit. Knobs: SIZES, INTERVAL (s), RUNS, KEEP=1, BIN_SRC, NATS_SERVER.
BENCH_NAME=fleet
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

SIZES=${SIZES:-1000 10000}
INTERVAL=${INTERVAL:-10}
RUNS=${RUNS:-5}

cat >"$WORK/fleet.py" <<'PY'
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nt import Nats, connect_retry, now


def cmd_template(port, node):
    """Prints one heartbeat of a real node."""
    c = connect_retry(int(port), now() + 10)
    c.send(f"SUB edgeleaf.hb.{node} 9\r\n".encode())
    deadline = now() + 30
    while True:
        m = c.next(deadline)
        if m != "PONG":
            print(m[1].decode())
            return


def cmd_fleet(port, template_file, n, interval, ready_file):
    """Heartbeats of n simulated nodes, each every `interval` s, spread evenly, until
    stopped. Writes `ready_file` after the first full round."""
    n, interval = int(n), float(interval)
    hb = json.load(open(template_file))
    hb["interval_s"] = interval  # what the hub judges a node offline by
    c = connect_retry(int(port), now() + 10)
    start = now()
    seq = 0
    while True:
        seq += 1
        for i in range(n):
            due = start + (seq - 1) * interval + i * interval / n
            wait = due - now()
            if wait > 0:
                time.sleep(wait)
            node = f"sim{i:05d}"
            hb.update(node_id=node, name=node, seq=seq, uptime_s=int(now() - start))
            body = json.dumps(hb).encode()
            c.send(b"PUB edgeleaf.hb.%s %d\r\n%s\r\n" % (node.encode(), len(body), body))
        c.flush()
        if seq == 1:
            open(ready_file, "w").write("ready")


def cmd_stats(*values):
    """min median max of seconds, to the millisecond."""
    v = sorted(float(x) for x in values)
    print(f"{v[0]:.3f} {v[len(v) // 2]:.3f} {v[-1]:.3f}")


def cmd_cpu(pid):
    """utime+stime of pid, in clock ticks."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    print(int(f[11]) + int(f[12]))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"template": cmd_template, "fleet": cmd_fleet, "cpu": cmd_cpu, "stats": cmd_stats}[cmd](*args)
PY
fl() { "$PY" "$WORK/fleet.py" "$@"; }
TICK=$(getconf CLK_TCK)

start_hub
hub_init
gen_key
log "hub up on $HUB_URL; taking one heartbeat of a real node as the template"
write_node_conf b1 "$(nt ports 1)" batch
env "EDGELEAF_LOG=$NODE_LOG" "$BIN" node -c "$WORK/b1.toml" >"$WORK/b1.log" 2>&1 &
B1=$!
PIDS+=("$B1")
fl template "$HUB_PORT" b1 >"$WORK/template.json" || die "no heartbeat from b1"
stop_pid "$B1" TERM

ROWS=()
for n in $SIZES; do
    log "fleet of $n simulated nodes, one heartbeat each every ${INTERVAL}s"
    rm -f "$WORK/ready"
    "$PY" "$WORK/fleet.py" fleet "$HUB_PORT" "$WORK/template.json" "$n" "$INTERVAL" "$WORK/ready" &
    SIM=$!
    PIDS+=("$SIM")
    for ((i = 0; i < 10 * (INTERVAL + 30); i++)); do [[ -f $WORK/ready ]] && break; sleep 0.1; done
    [[ -f $WORK/ready ]] || die "the simulator did not finish its first round"
    # One more interval: every simulated node has two heartbeats, the stream settles.
    sleep "$INTERVAL"
    cpu0=$(fl cpu "$HUB_PID")
    t0=$EPOCHREALTIME
    sleep "$INTERVAL"
    cpu1=$(fl cpu "$HUB_PID")
    t1=$EPOCHREALTIME
    hub_cpu=$("$PY" -c "print(f'{($cpu1-$cpu0)/$TICK/($t1-$t0)*100:.1f}')")
    hub_rss=$(nt rss "$HUB_PID")
    stream=$(nt streamcount "$HUB_PORT" EDGELEAF_HEARTBEATS 'edgeleaf.hb.>' | jget stream_messages)
    times=()
    for ((r = 0; r < RUNS; r++)); do
        s=$EPOCHREALTIME
        "$BIN" nodes --json -s "$HUB_URL" >"$WORK/nodes-$n.json" 2>"$WORK/nodes-$n.err" ||
            die "edgeleaf nodes failed: $(cat "$WORK/nodes-$n.err")"
        e=$EPOCHREALTIME
        times+=("$("$PY" -c "print($e-$s)")")
    done
    online=$("$PY" -c 'import json,sys
rows=json.load(open(sys.argv[1]))
print(sum(1 for r in rows if r["node_id"].startswith("sim") and r["status"]=="online"))' "$WORK/nodes-$n.json")
    bytes=$(wc -c <"$WORK/nodes-$n.json")
    read -r tmin tmed tmax <<<"$(fl stats "${times[@]}")"
    log "n=$n: nodes took $tmin / $tmed / $tmax s; $online online; hub ${hub_cpu}% CPU, RSS ${hub_rss} KiB"
    ROWS+=("| $n | $tmin / $tmed / $tmax | $online | $bytes | $hub_cpu | $((hub_rss / 1024)) | $stream |")
    stop_pid "$SIM" TERM
done

cat <<EOF
### Fleet on one hub (\`bash benches/fleet.sh\`)

$BIN_NOTE. $NATS_VERSION. Load average at start: $LOAD_START. Heartbeat every ${INTERVAL} s per
simulated node (one Python raw-protocol client publishing them all), after one full
interval of warm-up; \`nodes\` timed $RUNS times (spawn to exit, \`--json\`).

| simulated nodes | \`edgeleaf nodes\` s (min / median / max) | rows online | JSON bytes | hub CPU % while heartbeating | hub RSS MiB | heartbeat stream messages |
|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${ROWS[@]}")

Simulated nodes only heartbeat. A real node also holds KV watches (an ordered consumer
each) on the deployments bucket (its own key, \`all\`, each tag) and on the upgrades
bucket; at 10,000 nodes that is 20,000+ consumers on each of the two streams, above
\`hub init\`'s default \`--max-consumers\` of 16,384 per stream.
EOF
STATUS=0
