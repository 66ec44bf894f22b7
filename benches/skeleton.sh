#!/usr/bin/env bash
# Walking-skeleton benchmarks for edgeleaf.
#
#   bash benches/skeleton.sh            (from the repository root)
#
# Measures, on loopback only:
#   1. idle RSS of `edgeleaf node` 60 s after start (spawn = true), with the spawned leaf
#      nats-server and the hub nats-server listed separately (VmRSS from /proc/<pid>/status);
#   2. time from spawning `edgeleaf node` to the first heartbeat seen on the hub
#      (`edgeleaf.hb.bench`), 5 runs with spawn = true (leaf start included) and 5 runs
#      with spawn = false (node connects to a leaf nats-server started beforehand);
#   3. size of the stripped x86_64 release binary and its shared-library dependencies.
#
# Progress goes to stderr, the Markdown summary to stdout. Every process the script starts
# is stopped on exit (trap), by pid, after checking that its command line points into the
# script's own temporary directory. Every wait is bounded.
#
# Environment knobs (all optional):
#   RUNS=5          runs per start-up variant
#   IDLE_SECS=60    how long the node idles before its RSS is read
#   KEEP=1          keep the temporary directory (configs, logs) after a successful run
#   SKIP_BUILD=1    do not run `cargo build --release`; measure the existing
#                   target/release/edgeleaf (e.g. one built earlier from a given commit)
#   NATS_SERVER=/usr/sbin/nats-server

set -euo pipefail

RUNS=${RUNS:-5}
IDLE_SECS=${IDLE_SECS:-60}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
PY=${PYTHON:-python3}
HB_SUBJECT=edgeleaf.hb.bench
# Upper bound for one start-up run: the node's first heartbeat is due at once, later ones
# every 10 s, so 35 s leaves room for two lost heartbeats before the run counts as failed.
FIRST_HB_TIMEOUT=35

if [[ ! -f Cargo.toml || ! -d src ]]; then
    echo "run from the repository root: bash benches/skeleton.sh" >&2
    exit 2
fi
REPO=$(pwd)
BUILT_BIN=$REPO/target/release/edgeleaf

# The node reads EDGELEAF_* and NATS_* variables; none may leak in from the caller.
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(EDGELEAF_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(NATS_[A-Za-z0-9_]*\)=.*/\1/p')

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgeleaf-bench.XXXXXX")
PIDS=()              # processes started by this script, in start order
PIDS_FILE=$WORK/child-pids   # nodes (and their leaves) started by the python helper
: >"$PIDS_FILE"
STATUS=1

log() { printf '[skeleton %s] %s\n' "$(date +%T)" "$*" >&2; }

# Command line of a pid, NULs as spaces; empty when it is gone (or a zombie).
cmdline_of() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }

# Stops one pid if it is still ours: alive and its command line mentions $WORK.
stop_pid() {
    local pid=$1 i
    [[ -n $pid && $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cmdline_of "$pid") == *"$WORK"* ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do   # up to 10 s
        [[ -e /proc/$pid ]] || return 0
        # a zombie child of ours: reap it
        if [[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) == Z ]]; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    # helpers first (they stop their node), then nodes/leaves they recorded, then ours
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        if [[ $(cmdline_of "$pid") == *bench_tool.py* ]]; then
            stop_pid "$pid"
        fi
    done
    if [[ -s $PIDS_FILE ]]; then
        while read -r pid; do stop_pid "$pid"; done < <(tac "$PIDS_FILE")
    fi
    # leaves spawned by nodes (normally already stopped by their node)
    for pid in "$WORK"/*/state/leaf/nats-server.pid; do
        if [[ -f $pid ]]; then stop_pid "$(head -n1 "$pid")"; fi
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ $STATUS -eq 0 && $KEEP != 1 ]]; then
        rm -rf "$WORK"
    else
        log "work directory kept: $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# Python helper: free ports, readiness, and the raw-NATS heartbeat subscriber.
# Standard library only.
cat >"$WORK/bench_tool.py" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_ports(n):
    """Distinct free loopback ports: bind port 0 n times, holding all until done."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Nats:
    """Just enough of the NATS client protocol: CONNECT, SUB, PUB, PING/PONG, MSG."""

    def __init__(self, port, deadline):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, deadline - time.monotonic()))
        self.buf = b""
        line = self.line(deadline)
        if not line.startswith(b"INFO "):
            raise RuntimeError(f"port {port}: expected INFO, got {line[:80]!r}")
        self.info = json.loads(line[5:])

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def next_msg(self, deadline):
        """(subject, payload) of the next MSG; answers PINGs; None on PONG."""
        while True:
            line = self.line(deadline)
            if line.startswith(b"MSG "):
                parts = line.split()
                payload = self.exact(int(parts[-1]), deadline)
                return parts[1].decode(), payload
            if line == b"PING":
                self.send(b"PONG\r\n")
            elif line == b"PONG":
                return None
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode(errors="replace"))

    def subscribe(self, subject, deadline):
        self.send(b'CONNECT {"verbose":false}\r\nSUB %s 1\r\nPING\r\n' % subject.encode())
        while self.next_msg(deadline) is not None:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def cmd_ports(n):
    print(" ".join(map(str, free_ports(int(n)))))


def cmd_ready(port, timeout):
    """Waits until a server on port greets with INFO; prints its server_name."""
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            c = Nats(int(port), deadline)
            print(c.info.get("server_name") or c.info.get("server_id"))
            c.close()
            return
        except (OSError, TimeoutError, RuntimeError, ConnectionError):
            if time.monotonic() >= deadline:
                sys.exit(f"nothing greeted on 127.0.0.1:{port} within {timeout}s")
            time.sleep(0.05)


def cmd_linkwait(hub_port, leaf_port, timeout):
    """Waits until a message published on the leaf reaches a subscriber on the hub."""
    deadline = time.monotonic() + float(timeout)
    subject = f"_bench.link.{os.getpid()}"
    hub = Nats(int(hub_port), deadline)
    hub.subscribe(subject, deadline)
    leaf = Nats(int(leaf_port), deadline)
    leaf.send(b'CONNECT {"verbose":false}\r\n')
    t0 = time.monotonic()
    try:
        while True:
            leaf.send(b"PUB %s 0\r\n\r\n" % subject.encode())
            try:
                got = hub.next_msg(min(deadline, time.monotonic() + 0.1))
                if got is not None:
                    print(f"{(time.monotonic() - t0) * 1000:.0f}")
                    return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    sys.exit(f"leaf 127.0.0.1:{leaf_port} did not link to the hub within {timeout}s")
    finally:
        hub.close()
        leaf.close()


def proc_status(pid):
    """VmRSS, VmHWM (KiB) and thread count of a pid, or None."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(val.split()[0])
                elif key == "Threads":
                    out[key] = int(val)
    except OSError:
        return None
    return out


def read_pidfile(path, must_contain):
    try:
        pid = int(open(path).read().split()[0])
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if must_contain in cmdline else None


def stop(proc, grace):
    """SIGTERM, wait up to grace seconds, then SIGKILL. Returns (exit code, seconds)."""
    if proc.poll() is not None:
        return proc.returncode, 0.0
    t0 = time.monotonic()
    proc.terminate()
    try:
        rc = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        return f"killed (rc {rc}) after ignoring SIGTERM for {grace}s", time.monotonic() - t0
    return rc, time.monotonic() - t0


def cmd_run(opts_json):
    """Subscribes on the hub, spawns the node, and reports as JSON.

    mode "first": time from just before spawning the node to the first heartbeat on the hub.
    mode "idle": same, then keeps counting heartbeats for idle_secs after the spawn and reads
    VmRSS of the node, the leaf it spawned and the hub.
    """
    o = json.loads(opts_json)
    res = {"mode": o["mode"]}
    hub = Nats(o["hub_port"], time.monotonic() + 10)
    hub.subscribe(o["subject"], time.monotonic() + 10)
    log = open(o["log"], "wb")
    t0 = time.monotonic()
    node = subprocess.Popen(o["cmd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    with open(o["pids_file"], "a") as f:
        f.write(f"{node.pid}\n")
    leaf_pid = None
    try:
        deadline = t0 + o["first_timeout"]
        seen = []
        while not seen:
            if node.poll() is not None:
                res["error"] = f"node exited with {node.returncode} before its first heartbeat"
                return res
            try:
                got = hub.next_msg(min(deadline, time.monotonic() + 0.25))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    res["error"] = f"no heartbeat within {o['first_timeout']} s"
                    return res
                continue
            if got is not None:
                seen.append((time.monotonic() - t0, got[1]))
        res["first_hb_ms"] = round(seen[0][0] * 1000, 1)
        try:
            hb = json.loads(seen[0][1])
            res["first_seq"] = hb.get("seq")
            res["first_hub_link"] = (hb.get("hub_link") or {}).get("state")
        except ValueError:
            res["first_payload"] = seen[0][1][:200].decode(errors="replace")
        if o.get("leaf_pidfile"):
            leaf_pid = read_pidfile(o["leaf_pidfile"], o["work"])
            if leaf_pid:
                with open(o["pids_file"], "a") as f:
                    f.write(f"{leaf_pid}\n")
        if o["mode"] == "idle":
            end = t0 + o["idle_secs"]
            while time.monotonic() < end:
                if node.poll() is not None:
                    res["error"] = f"node exited with {node.returncode} while idling"
                    return res
                try:
                    got = hub.next_msg(min(end, time.monotonic() + 0.5))
                except TimeoutError:
                    continue
                if got is not None:
                    seen.append((time.monotonic() - t0, got[1]))
            res["idle_s"] = round(time.monotonic() - t0, 1)
            res["node"] = proc_status(node.pid)
            # the leaf may have been restarted by the node: read the pidfile again
            if o.get("leaf_pidfile"):
                now_pid = read_pidfile(o["leaf_pidfile"], o["work"])
                res["leaf_pid_changed"] = now_pid != leaf_pid
                leaf_pid = now_pid or leaf_pid
                res["leaf"] = proc_status(leaf_pid) if leaf_pid else None
            res["hub"] = proc_status(o["hub_pid"])
            res["heartbeats"] = len(seen)
            res["hb_times_s"] = [round(t, 2) for t, _ in seen]
            try:
                res["seqs"] = [json.loads(p).get("seq") for _, p in seen]
            except ValueError:
                pass
        return res
    finally:
        res["stop_rc"], secs = stop(node, 15)
        res["stop_s"] = round(secs, 2)
        if leaf_pid and os.path.exists(f"/proc/{leaf_pid}"):
            res["leaf_left_running"] = True
        log.close()
        hub.close()
        print(json.dumps(res))


def cmd_stats(*values):
    v = sorted(float(x) for x in values)
    print(f"{v[0]:.0f} {statistics.median(v):.0f} {v[-1]:.0f}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"ports": cmd_ports, "ready": cmd_ready, "linkwait": cmd_linkwait,
     "run": cmd_run, "stats": cmd_stats}[cmd](*args)
PY
tool() { "$PY" "$WORK/bench_tool.py" "$@"; }

# Runs the helper in the background (so the trap can stop it) and waits for it.
tool_bg() {
    local out=$1 pid
    shift
    "$PY" "$WORK/bench_tool.py" "$@" >"$out" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

# Reads a key from a JSON object on stdin.
jq_py() { "$PY" -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d.get(k) if isinstance(d, dict) else None
print("" if d is None else d)' "$1"; }

kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------
# 0. Build
[[ -x $NATS_SERVER ]] || { echo "nats-server not found ($NATS_SERVER)" >&2; exit 1; }
if [[ $SKIP_BUILD == 1 ]]; then
    [[ -x $BUILT_BIN ]] || { echo "$BUILT_BIN missing (SKIP_BUILD=1)" >&2; exit 1; }
    BUILD_NOTE="existing binary (SKIP_BUILD=1), built $(date -u -r "$BUILT_BIN" '+%Y-%m-%d %H:%M:%S UTC'); source commit not checked"
else
    log "cargo build --release (several minutes on 2 cores when not up to date)"
    if ! cargo build --release >"$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log" >&2
        exit 1
    fi
    [[ -x $BUILT_BIN ]] || { echo "$BUILT_BIN missing after the build" >&2; exit 1; }
    BUILD_NOTE="built by this run from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock build.rs 2>/dev/null) ]]; then
        BUILD_NOTE="$BUILD_NOTE plus uncommitted changes in src/ or Cargo.*"
    fi
fi
# Measure a private copy: a concurrent `cargo build` must not swap the binary mid-run.
BIN=$WORK/edgeleaf
cp "$BUILT_BIN" "$BIN"
BIN_SHA=$(sha256sum "$BIN" | cut -c1-16)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
VERSION=$("$BIN" --version)
NATS_VERSION=$("$NATS_SERVER" --version)

# ---------------------------------------------------------------------------------------
# 3. Binary size and dynamic dependencies (cheap, done first)
BIN_BYTES=$(stat -c %s "$BIN")
BIN_MIB=$(awk -v b="$BIN_BYTES" 'BEGIN { printf "%.2f", b / 1048576 }')
BIN_FILE=$(file -b "$BIN" 2>/dev/null | sed 's/BuildID\[[^]]*\]=[0-9a-f]*, //' || echo "(file not installed)")
LDD_OUT=$(ldd "$BIN" 2>&1 || true)
LDD_LIBS=$(awk '{print $1}' <<<"$LDD_OUT" | grep -v -e '^linux-vdso' -e '^/lib64/ld-linux' | sed 's/\.so.*//' | paste -sd, - | sed 's/,/, /g')
log "binary: $BIN_BYTES bytes ($BIN_MIB MiB)"

# ---------------------------------------------------------------------------------------
# Hub: nats-server with JetStream (domain hub) and a leafnode listener
read -r HUB_PORT HUB_LEAF_PORT <<<"$(tool ports 2)"
mkdir -p "$WORK/hub/js"
cat >"$WORK/hub/hub.conf" <<EOF
server_name: bench-hub
listen: 127.0.0.1:$HUB_PORT
jetstream {
  store_dir: "$WORK/hub/js"
  domain: hub
}
leafnodes {
  listen: 127.0.0.1:$HUB_LEAF_PORT
}
EOF
"$NATS_SERVER" -c "$WORK/hub/hub.conf" >"$WORK/hub/hub.log" 2>&1 &
HUB_PID=$!
PIDS+=("$HUB_PID")
tool ready "$HUB_PORT" 15 >/dev/null
log "hub up: pid $HUB_PID, client 127.0.0.1:$HUB_PORT, leafnodes 127.0.0.1:$HUB_LEAF_PORT"

ok=0
for ((i = 0; i < 15; i++)); do   # JetStream may need a moment after the port opens
    if timeout 30 "$BIN" -s "nats://127.0.0.1:$HUB_PORT" hub init >"$WORK/hub/init.log" 2>&1; then
        ok=1
        break
    fi
    sleep 1
done
if [[ $ok != 1 ]]; then
    cat "$WORK/hub/init.log" >&2
    exit 1
fi
log "hub init done"

# Writes a node config. $1 file, $2 state dir, $3 spawn (true/false), $4 port
# (leaf.listen when spawning, nats.url otherwise)
node_config() {
    local file=$1 state=$2 spawn=$3 port=$4
    {
        printf '[node]\nid = "bench"\nstate_dir = "%s"\n' "$state"
        if [[ $spawn == true ]]; then
            printf '[leaf]\nspawn = true\nlisten = "127.0.0.1:%s"\nhub_url = "nats-leaf://127.0.0.1:%s"\n' "$port" "$HUB_LEAF_PORT"
        else
            printf '[nats]\nurl = "nats://127.0.0.1:%s"\n' "$port"
            printf '[leaf]\nspawn = false\nlisten = "127.0.0.1:%s"\n' "$port"
        fi
        printf '[heartbeat]\ninterval = "10s"\n'
    } >"$file"
}

# Runs one node under the helper. $1 mode, $2 run dir, $3 spawn, $4 port.
# Leaves its JSON report in $2/result.json. Not for $(...): the helper's pid must be
# recorded in this shell so that the trap can stop it.
run_node() {
    local mode=$1 dir=$2 spawn=$3 port=$4 opts
    mkdir -p "$dir"
    node_config "$dir/node.toml" "$dir/state" "$spawn" "$port"
    opts=$("$PY" -c 'import json,sys
a=sys.argv
print(json.dumps({"mode": a[1], "hub_port": int(a[2]), "subject": a[3], "log": a[4] + "/node.log",
  "cmd": [a[5], "node", "-c", a[4] + "/node.toml"], "pids_file": a[6],
  "first_timeout": float(a[7]), "idle_secs": float(a[8]), "hub_pid": int(a[9]),
  "leaf_pidfile": a[4] + "/state/leaf/nats-server.pid" if a[10] == "true" else None,
  "work": a[11]}))' "$mode" "$HUB_PORT" "$HB_SUBJECT" "$dir" "$BIN" "$PIDS_FILE" \
        "$FIRST_HB_TIMEOUT" "$IDLE_SECS" "$HUB_PID" "$spawn" "$WORK")
    tool_bg "$dir/result.json" run "$opts"
}

# ---------------------------------------------------------------------------------------
# 1. Idle RSS after IDLE_SECS (spawn = true)
log "idle run: node with a spawned leaf, reading RSS after ${IDLE_SECS} s"
LEAF_PORT=$(tool ports 1)
run_node idle "$WORK/idle" true "$LEAF_PORT"
IDLE_JSON=$(cat "$WORK/idle/result.json")
if [[ -n $(jq_py error <<<"$IDLE_JSON") ]]; then
    echo "idle run failed: $(jq_py error <<<"$IDLE_JSON")" >&2
    cat "$WORK/idle/node.log" >&2
    exit 1
fi
NODE_RSS=$(jq_py node.VmRSS <<<"$IDLE_JSON")
NODE_HWM=$(jq_py node.VmHWM <<<"$IDLE_JSON")
NODE_THREADS=$(jq_py node.Threads <<<"$IDLE_JSON")
LEAF_RSS=$(jq_py leaf.VmRSS <<<"$IDLE_JSON")
LEAF_HWM=$(jq_py leaf.VmHWM <<<"$IDLE_JSON")
LEAF_THREADS=$(jq_py leaf.Threads <<<"$IDLE_JSON")
HUB_RSS=$(jq_py hub.VmRSS <<<"$IDLE_JSON")
HUB_HWM=$(jq_py hub.VmHWM <<<"$IDLE_JSON")
HUB_THREADS=$(jq_py hub.Threads <<<"$IDLE_JSON")
IDLE_HBS=$(jq_py heartbeats <<<"$IDLE_JSON")
IDLE_SEQS=$(jq_py seqs <<<"$IDLE_JSON")
IDLE_TIMES=$(jq_py hb_times_s <<<"$IDLE_JSON")
IDLE_AT=$(jq_py idle_s <<<"$IDLE_JSON")
IDLE_STOP="$(jq_py stop_rc <<<"$IDLE_JSON") in $(jq_py stop_s <<<"$IDLE_JSON") s"
log "idle: node ${NODE_RSS} KiB, leaf ${LEAF_RSS} KiB, hub ${HUB_RSS} KiB"

# ---------------------------------------------------------------------------------------
# 2a. Start to first heartbeat, spawn = true (fresh state dir and leaf port each run)
ROWS=""
SPAWN_MS=()
for ((r = 1; r <= RUNS; r++)); do
    LEAF_PORT=$(tool ports 1)
    run_node first "$WORK/spawn-$r" true "$LEAF_PORT"
    J=$(cat "$WORK/spawn-$r/result.json")
    err=$(jq_py error <<<"$J")
    if [[ -n $err ]]; then
        echo "spawn=true run $r failed: $err" >&2
        cat "$WORK/spawn-$r/node.log" >&2
        exit 1
    fi
    ms=$(jq_py first_hb_ms <<<"$J")
    SPAWN_MS+=("$ms")
    ROWS+="| spawn = true | $r | $ms | $(jq_py first_seq <<<"$J") | $(jq_py first_hub_link <<<"$J") | $(jq_py stop_rc <<<"$J") in $(jq_py stop_s <<<"$J") s |"$'\n'
    log "spawn=true run $r: first heartbeat after $ms ms (seq $(jq_py first_seq <<<"$J"))"
done

# 2b. Same with spawn = false, against a leaf nats-server started here beforehand
read -r OWN_LEAF_PORT <<<"$(tool ports 1)"
mkdir -p "$WORK/leaf"
cat >"$WORK/leaf/leaf.conf" <<EOF
server_name: bench-leaf
listen: 127.0.0.1:$OWN_LEAF_PORT
leafnodes {
  reconnect: 1
  remotes = [ { url: "nats-leaf://127.0.0.1:$HUB_LEAF_PORT" } ]
}
EOF
"$NATS_SERVER" -c "$WORK/leaf/leaf.conf" >"$WORK/leaf/leaf.log" 2>&1 &
OWN_LEAF_PID=$!
PIDS+=("$OWN_LEAF_PID")
tool ready "$OWN_LEAF_PORT" 15 >/dev/null
LINK_MS=$(tool linkwait "$HUB_PORT" "$OWN_LEAF_PORT" 30)
log "own leaf up: pid $OWN_LEAF_PID, 127.0.0.1:$OWN_LEAF_PORT, linked to the hub ($LINK_MS ms after it accepted clients)"

NOSPAWN_MS=()
for ((r = 1; r <= RUNS; r++)); do
    run_node first "$WORK/nospawn-$r" false "$OWN_LEAF_PORT"
    J=$(cat "$WORK/nospawn-$r/result.json")
    err=$(jq_py error <<<"$J")
    if [[ -n $err ]]; then
        echo "spawn=false run $r failed: $err" >&2
        cat "$WORK/nospawn-$r/node.log" >&2
        exit 1
    fi
    ms=$(jq_py first_hb_ms <<<"$J")
    NOSPAWN_MS+=("$ms")
    ROWS+="| spawn = false | $r | $ms | $(jq_py first_seq <<<"$J") | $(jq_py first_hub_link <<<"$J") | $(jq_py stop_rc <<<"$J") in $(jq_py stop_s <<<"$J") s |"$'\n'
    log "spawn=false run $r: first heartbeat after $ms ms (seq $(jq_py first_seq <<<"$J"))"
done

read -r S_MIN S_MED S_MAX <<<"$(tool stats "${SPAWN_MS[@]}")"
read -r N_MIN N_MED N_MAX <<<"$(tool stats "${NOSPAWN_MS[@]}")"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Warnings and errors the nodes logged (tracing levels), across all runs
NODE_WARNINGS=$(cat "$WORK"/idle/node.log "$WORK"/spawn-*/node.log "$WORK"/nospawn-*/node.log \
    | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' (WARN|ERROR) ' | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn || true)

# ---------------------------------------------------------------------------------------
# Summary (Markdown, stdout)
cat <<EOF
## Walking skeleton — $(date -u +%Y-%m-%d)

- edgeleaf: \`$VERSION\`, release profile (strip = true); $BUILD_NOTE; sha256 $BIN_SHA…
- nats-server: $NATS_VERSION ($NATS_SERVER)
- host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)
- load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END
- all processes on loopback; heartbeat interval 10 s; node id \`bench\`

### Idle memory, ${IDLE_SECS} s after \`edgeleaf node\` started (spawn = true)

| process | VmRSS | VmHWM (peak) | threads |
|---|---|---|---|
| \`edgeleaf node\` | $NODE_RSS KiB ($(kib_mib "$NODE_RSS") MiB) | $NODE_HWM KiB ($(kib_mib "$NODE_HWM") MiB) | $NODE_THREADS |
| leaf nats-server (spawned by the node) | $LEAF_RSS KiB ($(kib_mib "$LEAF_RSS") MiB) | $LEAF_HWM KiB ($(kib_mib "$LEAF_HWM") MiB) | $LEAF_THREADS |
| node + leaf | $((NODE_RSS + LEAF_RSS)) KiB ($(kib_mib $((NODE_RSS + LEAF_RSS))) MiB) | | |
| hub nats-server (JetStream, reference) | $HUB_RSS KiB ($(kib_mib "$HUB_RSS") MiB) | $HUB_HWM KiB ($(kib_mib "$HUB_HWM") MiB) | $HUB_THREADS |

Read at ${IDLE_AT} s. Heartbeats seen on the hub during the idle run: $IDLE_HBS (seq $IDLE_SEQS, at $IDLE_TIMES s after spawn). Node stop: exit $IDLE_STOP.

### Start to first heartbeat on the hub (${RUNS} runs each, fresh state dir per run)

| variant | min | median | max |
|---|---|---|---|
| spawn = true (node starts its leaf, which dials the hub) | $S_MIN ms | $S_MED ms | $S_MAX ms |
| spawn = false (leaf already running and linked) | $N_MIN ms | $N_MED ms | $N_MAX ms |

Per run (time from just before spawning \`edgeleaf node\` to the first \`MSG\` on \`$HB_SUBJECT\` at a subscriber on the hub; \`seq\` and \`hub_link\` are from that heartbeat's payload; last column: the node's exit after SIGTERM):

| variant | run | first heartbeat (ms) | seq | hub_link | stop |
|---|---|---|---|---|---|
${ROWS}
### Binary

| | |
|---|---|
| \`target/release/edgeleaf\` | $BIN_BYTES bytes ($BIN_MIB MiB) |
| type | $BIN_FILE |
| shared libraries | $LDD_LIBS |

\`\`\`
\$ ldd target/release/edgeleaf
$LDD_OUT
\`\`\`
EOF
if [[ -n $NODE_WARNINGS ]]; then
    printf '\n### Warnings and errors logged by the nodes (count, message)\n\n```\n%s\n```\n' "$NODE_WARNINGS"
fi

STATUS=0
