#!/usr/bin/env bash
# Timer lateness on an idle node: how long after its tick a timer run starts, and
# when its result reaches the hub.
#
#   cargo build --release && bash benches/timers.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub), runs `edgeleaf hub init`, and one node (`edgeleaf node -c`, spawned leaf) with
# two static echo agents on timers: `t200` (@every 200ms) and `t1s` (@every 1s). The
# echo agent replies with the run's payload, so each result record carries
# `scheduled_at` and `fired_at` (node clock). A subscriber on the hub collects the
# result records for $SECS seconds and prints, per agent:
#   - start lateness: fired_at - scheduled_at (the node's timer and dispatch);
#   - hub lateness: arrival at the hub subscriber (time.time()) - scheduled_at (the
#     run, the outbox and the link to the hub as well; same machine, same clock).
# Baseline, measured in the same run on the same machine: a Python loop that sleeps
# until each 200 ms boundary (time.sleep) and records how late it woke.
# Knobs: SECS=60, BIN_SRC (e.g. target/debug/edgeleaf), KEEP=1, NATS_SERVER.

BENCH_NAME=timers
source "$(dirname "$0")/lib.sh"
SECS=${SECS:-60}

start_hub
hub_init
gen_key
LEAF_PORT=$(nt ports 1)
write_node_conf t1 "$LEAF_PORT" batch "
[[agents]]
name = \"t200\"
wasm = \"$DIST/echo.wasm\"
schedule = [\"@every 200ms\"]
[[agents]]
name = \"t1s\"
wasm = \"$DIST/echo.wasm\"
schedule = [\"@every 1s\"]
"
J=$(start_node_probe t1 edgeleaf.ctl.t1.info "$HUB_PORT")
[[ -z $(jget error <<<"$J") ]] || { cat "$WORK/t1.log" >&2; die "node t1 did not start: $J"; }
log "node t1 up (pid $(node_pid t1)); collecting results for $SECS s"

cat >"$WORK/collect.py" <<'PY'
import json, statistics, sys, threading, time
from datetime import datetime
sys.path.insert(0, sys.argv[1])
from nt import Nats, now, pct

port, secs = int(sys.argv[2]), float(sys.argv[3])

def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

baseline = []
def sleeper(end):
    while True:
        t = time.time()
        nxt = (int(t * 5) + 1) / 5
        if nxt > end:
            return
        time.sleep(nxt - t)
        baseline.append((time.time() - nxt) * 1000)

c = Nats(port)
c.send(b"SUB edgeleaf.res.t1.* 2\r\nPING\r\n")
while c.next(now() + 5) != "PONG":
    pass
end_wall = time.time() + secs
thread = threading.Thread(target=sleeper, args=(end_wall,))
thread.start()
runs = {}
deadline = now() + secs
while True:
    try:
        m = c.next(deadline)
    except TimeoutError:
        break
    if m == "PONG" or m[2] not in (None, "hdr"):
        continue
    arrived = time.time()
    rec = json.loads(m[1])
    out = json.loads(rec["output"])
    sched = ts(out["scheduled_at"])
    runs.setdefault(rec["agent"], []).append(
        ((ts(out["fired_at"]) - sched) * 1000, (arrived - sched) * 1000))
thread.join()
c.close()

def row(name, values):
    v = sorted(values)
    return (f"| {name} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 99):.1f} | {v[-1]:.1f} |")

print("| what | runs | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|")
for agent in sorted(runs):
    print(row(f"{agent}: start (fired_at - scheduled_at)", [r[0] for r in runs[agent]]))
    print(row(f"{agent}: at the hub (arrival - scheduled_at)", [r[1] for r in runs[agent]]))
print(row("baseline: Python time.sleep to each 200 ms boundary", baseline))
PY
"$PY" "$WORK/collect.py" "$WORK" "$HUB_PORT" "$SECS" >"$WORK/table.md" || die "collector failed"
STATUS_LINE=$(nt ctl "$HUB_PORT" t1 agents)
echo "## Timer lateness, idle node, ${SECS} s ($(date -u +%F), $(git rev-parse --short HEAD))"
echo
cat "$WORK/table.md"
echo
echo "skipped_ticks: $("$PY" -c 'import json,sys; print({a["name"]: a["skipped_ticks"] for a in json.loads(sys.argv[1])})' "$STATUS_LINE")"
STATUS=0
