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
# spread evenly over the interval. Then a signed deploy to `all`, which the simulated
# nodes follow as nodes do (the changes' subscriptions, a read, a status write).
#
# Measured per size, after WARM (one interval) of heartbeats:
#  - `edgeleaf nodes --json -s <hub>`: wall time of RUNS (5) runs (spawn to exit),
#    min/median/max, and the rows it printed (every simulated node, online);
#  - the hub nats-server: RSS, and CPU (utime+stime from /proc) per second while the
#    fleet heartbeats (over one interval, no `nodes` running);
#  - the heartbeat stream's size on the hub;
#  - a signed `deploy --all --wait`: when the first simulated node heard of it, when
#    the last one's status was written, the CLI's own time and report, and the hub's
#    CPU over it.
#
# Progress goes to stderr, the Markdown summary to stdout. Every process started here is
# stopped by pid on exit. Knobs: SIZES, INTERVAL (s), RUNS, PROBE (s), RESYNC (s), KEEP=1,
# BIN_SRC, NATS_SERVER.
BENCH_NAME=fleet
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

SIZES=${SIZES:-1000 10000}
INTERVAL=${INTERVAL:-10}
RUNS=${RUNS:-5}
PROBE=${PROBE:-5}    # a node's hub-link probe period (heartbeat interval, at most 5 s)
RESYNC=${RESYNC:-30} # a node's full re-read of its deployments and upgrade keys

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


def cmd_follow(port, n, probe_s, resync_s, ready_file, out_file):
    """n simulated nodes follow the deployments bucket as a node does on a hub made by
    `hub init`: each subscribes to the changes of its own keys and of `all.*`
    (republished, headers only). On a change, each reads the key (a direct get) and
    writes its status key for that agent, `running` at the spec's version, as a node
    does once it runs the agent. Appends "<agent> <first change> <last status acked>
    <nodes>" to out_file when every node has written its status for an agent.

    Also what each node asks the hub's JetStream in steady state, spread evenly: its
    hub-link probe (account info) every probe_s, and every resync_s its full re-read
    (the deployments bucket's keys under its own and `all` (stream info with a
    subject filter, twice) and its upgrades keys (two direct gets)). 0 turns either
    off."""
    import base64, hashlib
    n, probe_s, resync_s = int(n), float(probe_s), float(resync_s)
    c = connect_retry(int(port), now() + 10)
    subs = []
    for i in range(n):
        node = f"sim{i:05d}"
        subs.append(b"SUB edgeleaf.kv.EDGELEAF_DEPLOYMENTS.node.%s.* %d\r\n" % (node.encode(), 10 + 2 * i))
        subs.append(b"SUB edgeleaf.kv.EDGELEAF_DEPLOYMENTS.all.* %d\r\n" % (11 + 2 * i))
        if len(subs) >= 2000:
            c.send(b"".join(subs))
            subs = []
    c.send(b"".join(subs))
    c.flush()
    open(ready_file, "w").write("ready")
    window = 256  # requests in flight, as many nodes at once would have
    todo = []     # (node index, key) waiting for a direct get
    inflight = {} # reply token -> (kind, node index, key, agent)
    done = {}     # agent -> set of node indexes acked
    first = {}    # agent -> wall clock of the first change seen
    token = 0
    t0, probes, resyncs = now(), 0, 0
    while True:
        steady = []
        if probe_s > 0:
            due = int((now() - t0) * n / probe_s)
            while probes < due:
                steady.append(c.request_bytes("$JS.API.INFO", b"", "steady"))
                probes += 1
        if resync_s > 0:
            due = int((now() - t0) * n / resync_s)
            while resyncs < due:
                node = f"sim{resyncs % n:05d}"
                for flt in (f"node.{node}.*", "all.*"):
                    body = json.dumps({"subjects_filter": f"$KV.EDGELEAF_DEPLOYMENTS.{flt}"}).encode()
                    steady.append(c.request_bytes("$JS.API.STREAM.INFO.KV_EDGELEAF_DEPLOYMENTS", body, "steady"))
                for key in (f"node.{node}.x86_64", "all.x86_64"):
                    body = json.dumps({"last_by_subj": f"$KV.EDGELEAF_UPGRADES.{key}"}).encode()
                    steady.append(c.request_bytes("$JS.API.DIRECT.GET.KV_EDGELEAF_UPGRADES", body, "steady"))
                resyncs += 1
        if steady:
            c.send(b"".join(steady))
        while todo and len(inflight) < window:
            i, key = todo.pop()
            token += 1
            body = json.dumps({"last_by_subj": f"$KV.EDGELEAF_DEPLOYMENTS.{key}"}).encode()
            c.send(c.request_bytes("$JS.API.DIRECT.GET.KV_EDGELEAF_DEPLOYMENTS", body, str(token)))
            inflight[str(token)] = ("get", i, key)
        try:
            m = c.next(now() + 0.01)
        except TimeoutError:
            continue
        if m == "PONG":
            continue
        subject, payload, status = m
        if subject.startswith("edgeleaf.kv.EDGELEAF_DEPLOYMENTS."):
            key = subject[len("edgeleaf.kv.EDGELEAF_DEPLOYMENTS."):]
            first.setdefault(key.rsplit(".", 1)[-1], time.time())
            # one change per subscription: its sid names the node
            todo.append(((c.last_sid - 10) // 2, key))
            continue
        tok = subject.rsplit(".", 1)[-1]
        what = inflight.pop(tok, None)
        if what is None:
            continue
        if what[0] == "get":
            _, i, key = what
            if status not in ("ok", "hdr") or not payload:
                continue  # deleted or gone: nothing to run
            env = json.loads(payload)
            spec = json.loads(base64.b64decode(env["spec"]))
            agent = spec["agent"]["name"]
            node = f"sim{i:05d}"
            st = {"node_id": node, "agent": agent, "state": "running",
                  "version": spec.get("version"), "running_version": spec.get("version"),
                  "digest": (spec.get("module") or {}).get("digest"), "key": key,
                  "error": None, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "envelope_sha256": hashlib.sha256(payload).hexdigest()}
            body = json.dumps(st).encode()
            token += 1
            c.send(c.request_bytes(f"$KV.EDGELEAF_STATUS.{node}.{agent}", body, str(token)))
            inflight[str(token)] = ("put", i, agent)
        else:
            _, i, agent = what
            if b'"error"' in payload:
                print(f"status put of sim{i:05d} failed: {payload[:200]!r}", file=sys.stderr)
                continue
            acked = done.setdefault(agent, set())
            acked.add(i)
            if len(acked) == n:
                with open(out_file, "a") as f:
                    f.write(f"{agent} {first.get(agent, 0):.3f} {time.time():.3f} {n}\n")


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
    {"template": cmd_template, "fleet": cmd_fleet, "follow": cmd_follow, "cpu": cmd_cpu,
     "stats": cmd_stats}[cmd](*args)
PY
fl() { "$PY" "$WORK/fleet.py" "$@"; }
TICK=$(getconf CLK_TCK)
# The hub's CPU over the next SECS seconds, in % of one core.
hub_cpu_over() {
    local c0 c1 t0 t1
    c0=$(fl cpu "$HUB_PID")
    t0=$EPOCHREALTIME
    sleep "$1"
    c1=$(fl cpu "$HUB_PID")
    t1=$EPOCHREALTIME
    "$PY" -c "print(f'{($c1-$c0)/$TICK/($t1-$t0)*100:.1f}')"
}

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
DEPLOYS=()
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
    hub_cpu=$(hub_cpu_over "$INTERVAL")
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

    log "n=$n: the simulated nodes follow the deployments, probe the hub link every ${PROBE}s and re-read every ${RESYNC}s"
    rm -f "$WORK/follow-ready"
    : >"$WORK/converged-$n"
    "$PY" "$WORK/fleet.py" follow "$HUB_PORT" "$n" "$PROBE" "$RESYNC" "$WORK/follow-ready" \
        "$WORK/converged-$n" 2>"$WORK/follow-$n.err" &
    FOLLOW=$!
    PIDS+=("$FOLLOW")
    for ((i = 0; i < 600; i++)); do [[ -f $WORK/follow-ready ]] && break; sleep 0.1; done
    [[ -f $WORK/follow-ready ]] || die "the followers did not subscribe: $(cat "$WORK/follow-$n.err")"
    sleep "$INTERVAL"
    steady_cpu=$(hub_cpu_over "$RESYNC")
    log "n=$n: hub ${steady_cpu}% CPU in steady state; a signed deploy to all"
    cpu0=$(fl cpu "$HUB_PID")
    s=$EPOCHREALTIME
    "$BIN" deploy "$DIST/echo.wasm" --name "wide$n" --trigger "fleet.wide$n" --all --key "$KEY" \
        -s "$HUB_URL" --wait 600s --json >"$WORK/deploy-$n.json" 2>"$WORK/deploy-$n.err" || true
    e=$EPOCHREALTIME
    for ((i = 0; i < 6000; i++)); do [[ -s $WORK/converged-$n ]] && break; sleep 0.1; done
    read -r _ t_first t_all _ <"$WORK/converged-$n" || die "the simulated nodes did not converge: $(tail -3 "$WORK/follow-$n.err")"
    cpu1=$(fl cpu "$HUB_PID")
    hub_rss=$(nt rss "$HUB_PID")
    running=$("$PY" -c 'import json,sys
r=json.load(open(sys.argv[1]))
print(sum(1 for n in r["nodes"] if n["state"]=="running"))' "$WORK/deploy-$n.json" 2>/dev/null || echo "?")
    deploy_s=$("$PY" -c "print(f'{$e-$s:.1f}')")
    converge_s=$("$PY" -c "print(f'{$t_all-$s:.2f}')")
    notify_s=$("$PY" -c "print(f'{$t_first-$s:.2f}')")
    deploy_cpu=$("$PY" -c "print(f'{($cpu1-$cpu0)/$TICK:.1f}')")
    log "n=$n: deploy --wait ${deploy_s}s ($running running); every status written ${converge_s}s after the deploy started"
    DEPLOYS+=("| $n | $steady_cpu | $notify_s | $converge_s | $deploy_s | $running | $deploy_cpu | $((hub_rss / 1024)) |")
    stop_pid "$FOLLOW" TERM
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

Then the simulated nodes (one more raw-protocol client) also do what a node asks of
the hub besides heartbeats, spread evenly: a hub-link probe (JetStream account info)
every ${PROBE} s, and every ${RESYNC} s a full re-read (its deployments keys under its own
key and \`all\`: two stream infos with a subject filter; its upgrade keys: two direct
gets). Hub CPU in that steady state is measured over ${RESYNC} s. Then a signed \`deploy
--all --wait 600s --json\` of echo.wasm: the simulated nodes follow the deployments
bucket as a node does on a hub made by \`hub init\` (a subscription each to the
republished changes of its own keys and of \`all.*\`; on a change, a direct get of
the key, then a \`running\` status written to \`EDGELEAF_STATUS\`; 256 requests in
flight). A real node also compiles and starts the agent: not simulated.

| simulated nodes | hub CPU % in steady state | first change heard, s after \`deploy\` started | every status written, s | \`deploy --wait\` s (spawn to exit) | nodes it reported \`running\` | hub CPU s over the deploy | hub RSS MiB after |
|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${DEPLOYS[@]}")
EOF
STATUS=0
