#!/usr/bin/env bash
# Many agents on one node: memory, start and reconcile times, and reply sizes.
#
#   cargo build --release && bash benches/many_agents.sh      (from the repository root)
#
# Starts, on loopback with kernel-chosen ports, a hub nats-server (JetStream, domain
# hub), `edgeleaf hub init`, and one node (`big`, spawned leaf, limits.max_agents =
# N + 1). Deploys echo.wasm once with the CLI (signed, which uploads the module), then
# writes N-1 more deployments of it straight into EDGELEAF_DEPLOYMENTS through the
# hub: the first spec re-signed per agent would need the CLI N times, so these are
# unsigned (`security.allow_unsigned = true` on this node) copies with their own
# name, trigger and key. Every agent runs its own instance of the same module.
#
# Measured, for N (default 1000):
#  - from the first bulk write until the node's `info` counts N agents running;
#  - node and leaf RSS and PSS (/proc/PID/smaps_rollup) after IDLE (20 s) with all N;
#  - the heartbeat's size, and the `ctl.big.agents` replies (every page) and
#    `edgeleaf agents --node big --json` (wall time, bytes);
#  - one more signed `deploy --wait` (spawn to exit) with 1 and with N agents running;
#  - a restart (SIGTERM, start): to the first heartbeat, and until N run again (from
#    the node's own store and its compiled-code cache);
#  - a request to the last agent through the hub.
#
# Progress goes to stderr, the Markdown summary to stdout. Every process started here
# is stopped by pid on exit. Knobs: N, IDLE (s), KEEP=1, BIN_SRC, NATS_SERVER.
BENCH_NAME=many-agents
# shellcheck source=benches/lib.sh
source "$(dirname "$0")/lib.sh"

N=${N:-1000}
IDLE=${IDLE:-20}

cat >"$WORK/many.py" <<'PY'
import base64, json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nt import Nats, connect_retry, now


def cmd_bulk(port, node, first, n):
    """Copies deployment node.<node>.<first> as unsigned deployments a0001..a<n-1>."""
    n = int(n)
    c = connect_retry(int(port), now() + 10)
    subject = f"$KV.EDGELEAF_DEPLOYMENTS.node.{node}.{first}"
    st, data, _ = c.request("$JS.API.DIRECT.GET.KV_EDGELEAF_DEPLOYMENTS",
                            json.dumps({"last_by_subj": subject}).encode(), 10)
    if st not in ("ok", "hdr"):  # a direct get answers with headers
        sys.exit(f"direct get of {subject}: {st}")
    spec = json.loads(base64.b64decode(json.loads(data)["spec"]))
    t0 = time.time()
    for i in range(1, n):
        name = f"a{i:04d}"
        spec["agent"]["name"] = name
        spec["agent"]["triggers"] = [f"many.{name}"]
        spec["target"] = f"node.{node}.{name}"
        spec["publisher"] = None
        spec["nonce"] = f"bulk{i}"
        env = {"spec": base64.b64encode(json.dumps(spec).encode()).decode(),
               "signature": None, "publisher": None}
        st, data, _ = c.request(f"$KV.EDGELEAF_DEPLOYMENTS.node.{node}.{name}",
                                json.dumps(env).encode(), 10)
        if st != "ok" or b"error" in data:
            sys.exit(f"put {name}: {st} {data[:200]!r}")
    print(f"{t0:.3f}")


def cmd_running(port, node, n, timeout):
    """Waits until info counts n agents running; prints the wall clock then."""
    c = connect_retry(int(port), now() + 10)
    deadline = now() + float(timeout)
    while now() < deadline:
        st, data, _ = c.request(f"edgeleaf.ctl.{node}.info", b"", 5)
        if st == "ok":
            running = json.loads(data)["ok"]["agents"]["running"]
            if running >= int(n):
                print(f"{time.time():.3f}")
                return
        time.sleep(0.05)
    sys.exit(f"{node} did not run {n} agents within {timeout} s")


def cmd_pages(port, node):
    """Every page of ctl.<node>.agents: prints pages, rows, largest page bytes, total
    bytes, seconds."""
    c = connect_retry(int(port), now() + 10)
    after, pages, rows, largest, total = None, 0, 0, 0, 0
    t0 = now()
    while True:
        body = json.dumps({"after": after}).encode() if after else b""
        st, data, _ = c.request(f"edgeleaf.ctl.{node}.agents", body, 10)
        if st not in ("ok", "hdr"):
            sys.exit(f"ctl agents: {st}")
        page = json.loads(data)["ok"]
        pages += 1
        rows += len(page)
        largest = max(largest, len(data))
        total += len(data)
        if not page or not c.last_headers.get("edgeleaf-next"):
            break
        after = c.last_headers["edgeleaf-next"]
    print(pages, rows, largest, total, f"{now() - t0:.3f}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"bulk": cmd_bulk, "running": cmd_running, "pages": cmd_pages}[cmd](*args)
PY
ma() { "$PY" "$WORK/many.py" "$@"; }

start_hub
hub_init
gen_key
LEAF_PORT=$(nt ports 1)
write_node_conf big "$LEAF_PORT" batch "[limits]
max_agents = $((N + 2))"
# allow_unsigned belongs in the [security] section write_node_conf wrote.
sed -i "s/^\[security\]$/[security]\nallow_unsigned = true/" "$WORK/big.toml"
start_node() { start_node_bg big; }
deploy_one() { timed_deploy "$DIST/echo.wasm" "$1" "many.$1" big; }

start_node
log "node big up (pid $NODE_PID); first deployment"
deploy_one a0000 >/dev/null
deploy_at_1=$(deploy_one probe1)
log "one more deploy with 2 agents: ${deploy_at_1}s; writing $((N - 1)) more deployments"
t_write=$(ma bulk "$HUB_PORT" big a0000 "$N")
t_all=$(ma running "$HUB_PORT" big "$((N + 1))" 900)
converge=$("$PY" -c "print(f'{$t_all-$t_write:.1f}')")
log "$N agents running ${converge}s after the first bulk write"
sleep "$IDLE"
LEAF_PID=$(cat "$WORK/big/leaf/nats-server.pid")
read -r node_rss node_pss <<<"$(nt pss "$NODE_PID")"
read -r leaf_rss leaf_pss <<<"$(nt pss "$LEAF_PID")"
node_threads=$(awk '/^Threads:/ {print $2}' "/proc/$NODE_PID/status")
node_vm=$(awk '/^VmSize:/ {print $2}' "/proc/$NODE_PID/status")
log "idle: node RSS ${node_rss} KiB PSS ${node_pss} KiB (VmSize ${node_vm} KiB); leaf RSS ${leaf_rss} KiB"
coproc HB { nt first_hb "$HUB_PORT" big 30; }
read -r _ <&"${HB[0]}"
read -r _ hb_bytes <&"${HB[0]}"
read -r pages rows largest total ctl_s <<<"$(ma pages "$HUB_PORT" big)"
s=$EPOCHREALTIME
"$BIN" agents --node big --json -s "$HUB_URL" >"$WORK/agents.json" 2>"$WORK/agents.err" ||
    die "agents: $(cat "$WORK/agents.err")"
e=$EPOCHREALTIME
agents_s=$("$PY" -c "print(f'{$e-$s:.2f}')")
agents_rows=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/agents.json")
agents_bytes=$(wc -c <"$WORK/agents.json")
deploy_at_n=$(deploy_one probe2)
log "deploy with $((N + 1)) agents running: ${deploy_at_n}s"
reply=$(nt request "$HUB_PORT" "many.a$(printf %04d $((N - 1)))" hello 10 || true)

log "restart"
stop_pid "$NODE_PID" TERM
coproc HB2 { nt first_hb "$HUB_PORT" big 60; }
read -r _ <&"${HB2[0]}"
t0=$("$PY" -c 'import time; print(f"{time.time():.3f}")')
start_node
read -r t_hb _ <&"${HB2[0]}"
t_back=$(ma running "$HUB_PORT" big "$((N + 2))" 900)
first_hb=$("$PY" -c "print(f'{$t_hb-$t0:.2f}')")
restored=$("$PY" -c "print(f'{$t_back-$t0:.1f}')")
read -r node_rss2 node_pss2 <<<"$(nt pss "$NODE_PID")"
log "restart: first heartbeat ${first_hb}s, all running ${restored}s; RSS ${node_rss2} KiB"

cat <<EOF
### Many agents on one node (\`bash benches/many_agents.sh\`, N=$N)

$BIN_NOTE. $NATS_VERSION. Load average at start: $LOAD_START. One node with a spawned
leaf; $((N + 2)) agents at the end (N copies of echo.wasm plus two deployed by the CLI),
every one its own deployment key, triggers and state; \`limits.pool_slots\` default.

| | |
|---|---|
| all $N running, after the first bulk write | $converge s |
| node RSS / PSS, idle $IDLE s with $((N + 1)) agents | $((node_rss / 1024)) / $((node_pss / 1024)) MiB ($node_threads threads; VmSize $((node_vm / 1024)) MiB) |
| leaf RSS / PSS | $((leaf_rss / 1024)) / $((leaf_pss / 1024)) MiB |
| heartbeat | $hb_bytes bytes |
| \`ctl.big.agents\` | $pages page(s), $rows rows, largest reply $largest bytes, $total bytes in all, $ctl_s s |
| \`edgeleaf agents --node big --json\` | $agents_s s, $agents_rows rows, $agents_bytes bytes |
| signed \`deploy --wait\` of one more agent, 2 agents running | $deploy_at_1 s |
| the same with $((N + 1)) agents running | $deploy_at_n s |
| restart: SIGTERM, start to first heartbeat | $first_hb s |
| restart: until all $((N + 2)) run again (own store, compiled cache) | $restored s |
| node RSS / PSS after the restart | $((node_rss2 / 1024)) / $((node_pss2 / 1024)) MiB |
| request to the last agent through the hub | $(echo "$reply" | head -c 80) |
EOF
STATUS=0
