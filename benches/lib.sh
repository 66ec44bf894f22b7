# shellcheck shell=bash
# Shared set-up for benches/shipping.sh and benches/outbox.sh (sourced, not run).
#
# Provides: a private work directory ($WORK) with a copy of the release binary ($BIN),
# a trap that stops, by pid, only the processes started here (and only while their
# command line still points into $WORK), free loopback ports from the kernel, a hub
# nats-server (JetStream, domain "hub", leafnode listener), `edgeleaf hub init`, a
# publisher key, node configs, and a raw-NATS Python helper ($WORK/nt.py, standard
# library only) that spawns processes, probes subjects, floods, and generates load.
#
# Knobs read here (all optional): BIN_SRC (binary to copy, default
# target/release/edgeleaf), NATS_SERVER, PYTHON, KEEP=1 (keep $WORK).

set -euo pipefail

if [[ ! -f Cargo.toml || ! -d src ]]; then
    echo "run from the repository root: bash benches/$(basename "$0")" >&2
    exit 2
fi
REPO=$(pwd)
BIN_SRC=${BIN_SRC:-$REPO/target/release/edgeleaf}
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
PY=${PYTHON:-python3}
KEEP=${KEEP:-0}
DIST=$REPO/wasm-agents/dist

# The node and the CLI read EDGELEAF_* and NATS_* variables; none may leak in.
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(EDGELEAF_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(NATS_[A-Za-z0-9_]*\)=.*/\1/p')

[[ -x $NATS_SERVER ]] || { echo "nats-server not found ($NATS_SERVER)" >&2; exit 1; }
[[ -x $BIN_SRC ]] || { echo "$BIN_SRC missing: run cargo build --release first" >&2; exit 1; }
for f in echo.wasm threshold.wasm; do
    [[ -f $DIST/$f ]] || { echo "$DIST/$f missing: run bash wasm-agents/build.sh" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgeleaf-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()                      # processes started by this script (bash children)
PIDS_FILE=$WORK/child-pids   # processes started by the python helper (nodes)
: >"$PIDS_FILE"
STATUS=1

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# Command line of a pid, NULs as spaces; empty when it is gone.
cmdline_of() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }
is_zombie() { [[ $(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) == Z ]]; }
alive() { [[ -e /proc/$1 ]] && ! is_zombie "$1"; }

# Sends SIG to pid if it is still ours (alive, command line mentions $WORK) and waits
# up to 10 s for it to go (SIGKILL after that). Returns at once for SIGKILL.
# Sets LAST_STOP to what happened.
LAST_STOP=""
stop_pid() {
    local pid=$1 sig=${2:-TERM} i t0=$EPOCHREALTIME
    LAST_STOP="not running"
    [[ -n $pid && $pid =~ ^[0-9]+$ ]] || return 0
    [[ $(cmdline_of "$pid") == *"$WORK"* ]] || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        if ! [[ -e /proc/$pid ]] || is_zombie "$pid"; then
            wait "$pid" 2>/dev/null || true
            LAST_STOP="exited $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s after SIG$sig"
            return 0
        fi
        sleep 0.1
    done
    log "pid $pid ignored SIG$sig for 10 s; sending SIGKILL"
    LAST_STOP="ignored SIG$sig for 10 s, killed with SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    # python helpers first, then the nodes they started, then their leaves, then ours
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        [[ $(cmdline_of "${PIDS[i]}") == *nt.py* ]] && stop_pid "${PIDS[i]}"
    done
    if [[ -s $PIDS_FILE ]]; then
        while read -r pid; do stop_pid "$pid"; done < <(tac "$PIDS_FILE")
    fi
    for pid in "$WORK"/*/leaf/nats-server.pid; do
        [[ -f $pid ]] && stop_pid "$(head -n1 "$pid")"
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

# Measure a private copy: a concurrent `cargo build` must not swap the binary mid-run.
BIN=$WORK/edgeleaf
cp "$BIN_SRC" "$BIN"
BIN_NOTE="$("$BIN" --version), copied from $BIN_SRC (built $(date -u -r "$BIN_SRC" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$BIN" | cut -c1-12)…)"
if git -C "$REPO" rev-parse --short HEAD >/dev/null 2>&1; then
    BIN_NOTE="$BIN_NOTE; tree at $(git -C "$REPO" rev-parse --short HEAD)"
    if [[ -n $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        BIN_NOTE="$BIN_NOTE with uncommitted changes in src/ or Cargo.*"
    fi
fi
NATS_VERSION=$("$NATS_SERVER" --version)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
UPTIME_START=$(uptime)

# ---------------------------------------------------------------------------------------
# Python helper: raw NATS client protocol, standard library only.
cat >"$WORK/nt.py" <<'PY'
import json, os, random, select, signal, socket, statistics, string, subprocess, sys, time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
now = time.monotonic


def free_ports(n):
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
    """CONNECT (headers, no_responders), SUB, PUB, PING/PONG, MSG and HMSG."""

    def __init__(self, port, timeout=5.0):
        deadline = now() + timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        line = self.line(deadline)
        if not line.startswith(b"INFO "):
            raise ConnectionError(f"expected INFO, got {bytes(line[:60])!r}")
        self.info = json.loads(line[5:])
        self.inbox = "_INBOX." + "".join(random.choices(string.ascii_letters, k=12))
        self.send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
                  b'"protocol":1,"name":"bench-py"}\r\nSUB %s.* 1\r\nPING\r\n' % self.inbox.encode())
        while True:
            m = self.next(deadline)
            if m == "PONG":
                break
        self.n = 0
        self.last_headers = {}
        self.last_sid = 0

    def send(self, data):
        self.sock.sendall(data)

    def fill(self, deadline):
        left = deadline - now()
        if left <= 0:
            raise TimeoutError
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def line(self, deadline):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self.fill(deadline)

    def exact(self, n, deadline):
        while len(self.buf) < n + 2:
            self.fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return data

    def next(self, deadline):
        """A message as (subject, reply-token, status, payload); "PONG" on PONG.

        status: None for a plain MSG; for HMSG the NATS status code ("503" = no
        responders) or, for an edgeleaf error reply, "edgeleaf-error:<code>"."""
        while True:
            line = self.line(deadline)
            if line.startswith(b"MSG "):
                self.last_headers = {}
                p = line.split()
                self.last_sid = int(p[2])
                payload = self.exact(int(p[-1]), deadline)
                return p[1].decode(), payload, None
            if line.startswith(b"HMSG "):
                p = line.split()
                self.last_sid = int(p[2])
                hlen, total = int(p[-2]), int(p[-1])
                data = self.exact(total, deadline)
                hdr, payload = data[:hlen].decode(errors="replace"), data[hlen:]
                lines = hdr.split("\r\n")
                status = lines[0][8:].strip().split(" ")[0] or "hdr"
                self.last_headers = {}
                for h in lines[1:]:
                    k, _, v = h.partition(":")
                    if k.strip():
                        self.last_headers[k.strip().lower()] = v.strip()
                    if k.strip().lower() == "edgeleaf-error":
                        status = "edgeleaf-error:" + v.strip()
                return p[1].decode(), payload, status
            if line == b"PING":
                self.send(b"PONG\r\n")
            elif line == b"PONG":
                return "PONG"
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))

    def request_bytes(self, subject, payload, token):
        return b"PUB %s %s.%s %d\r\n%s\r\n" % (subject.encode(), self.inbox.encode(), token.encode(),
                                               len(payload), payload)

    def request(self, subject, payload, timeout):
        """(status, payload, seconds); status "ok", "503", "timeout", "edgeleaf-error:…"."""
        self.n += 1
        token = str(self.n)
        t0 = now()
        self.send(self.request_bytes(subject, payload, token))
        deadline = t0 + timeout
        while True:
            try:
                m = self.next(deadline)
            except TimeoutError:
                return "timeout", b"", now() - t0
            if m == "PONG":
                continue
            subj, data, status = m
            if subj.rsplit(".", 1)[-1] == token:
                return status or "ok", data, now() - t0

    def flush(self, timeout=30):
        self.send(b"PING\r\n")
        deadline = now() + timeout
        while self.next(deadline) != "PONG":
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def connect_retry(port, deadline):
    while True:
        try:
            return Nats(port, timeout=max(0.2, min(5.0, deadline - now())))
        except (OSError, ConnectionError, TimeoutError):
            if now() >= deadline:
                raise TimeoutError(f"cannot connect to 127.0.0.1:{port}")
            time.sleep(0.02)


def cmd_ports(n):
    print(" ".join(map(str, free_ports(int(n)))))


def cmd_ready(port, timeout):
    c = connect_retry(int(port), now() + float(timeout))
    print(c.info.get("server_name") or c.info.get("server_id"))
    c.close()


def cmd_request(port, subject, payload, timeout):
    """One request; prints its status and payload; exit 1 unless ok."""
    c = connect_retry(int(port), now() + 5)
    status, data, _ = c.request(subject, payload.encode(), float(timeout))
    print(status, data.decode(errors="replace"))
    sys.exit(0 if status == "ok" else 1)


def cmd_probe(opts_json):
    """Optionally spawns a command, then polls subjects until each answers with success.

    opts: port, subjects, payload, expect (substring of a good reply, optional),
    timeout (s), req_timeout (s), pause (s between rounds), cmd (list, optional),
    detach (leave the command running, record its pid in pids_file), log (file for the
    command's output), started_at (unused). Prints JSON: ms per subject from just
    before the spawn (or from the start of polling), ms_all, cmd_rc and cmd_ms."""
    o = json.loads(opts_json)
    res = {"polls": 0, "statuses": {}}
    proc = None
    out = open(o["log"], "ab") if o.get("log") else subprocess.DEVNULL
    t0 = now()
    if o.get("cmd"):
        proc = subprocess.Popen(o["cmd"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if o.get("detach"):
            with open(o["pids_file"], "a") as f:
                f.write(f"{proc.pid}\n")
            res["pid"] = proc.pid
    deadline = t0 + float(o["timeout"])
    pending = list(o["subjects"])
    got = {}
    conn = None
    payload = o.get("payload", "ping").encode()
    try:
        while pending:
            if now() >= deadline:
                res["error"] = f"no good reply within {o['timeout']} s from {pending}"
                break
            if proc is not None and "cmd_rc" not in res and proc.poll() is not None:
                if o.get("detach"):
                    res["error"] = f"spawned process exited with {proc.returncode}"
                    break
                res["cmd_rc"], res["cmd_ms"] = proc.returncode, round((now() - t0) * 1000, 1)
            if conn is None:
                try:
                    conn = Nats(o["port"], timeout=0.5)
                except (OSError, ConnectionError, TimeoutError):
                    conn = None
                    time.sleep(0.02)
                    continue
            # one request per pending subject, then collect
            tokens = {}
            try:
                for s in pending:
                    conn.n += 1
                    tokens[str(conn.n)] = s
                    conn.send(conn.request_bytes(s, payload, str(conn.n)))
                res["polls"] += 1
                rdl = now() + float(o.get("req_timeout", 0.2))
                while tokens:
                    try:
                        m = conn.next(rdl)
                    except TimeoutError:
                        for _ in tokens:
                            res["statuses"]["timeout"] = res["statuses"].get("timeout", 0) + 1
                        break
                    if m == "PONG":
                        continue
                    subj, data, status = m
                    tok = subj.rsplit(".", 1)[-1]
                    s = tokens.pop(tok, None)
                    if s is None:
                        continue  # late reply of an earlier round
                    st = status or "ok"
                    if st == "ok" and o.get("expect") and o["expect"] not in data.decode(errors="replace"):
                        st = "unexpected"
                    if st == "ok":
                        if s in pending:
                            got[s] = round((now() - t0) * 1000, 1)
                            pending.remove(s)
                    else:
                        res["statuses"][st] = res["statuses"].get(st, 0) + 1
            except (OSError, ConnectionError):
                conn.close()
                conn = None
                continue
            if pending:
                time.sleep(float(o.get("pause", 0.005)))
        res["ms"] = got
        if got and not pending:
            res["ms_all"] = max(got.values())
        if proc is not None and not o.get("detach") and "cmd_rc" not in res:
            try:
                res["cmd_rc"] = proc.wait(timeout=max(1.0, deadline - now()))
            except subprocess.TimeoutExpired:
                proc.kill()
                res["cmd_rc"] = "killed"
            res["cmd_ms"] = round((now() - t0) * 1000, 1)
        return res
    finally:
        if conn:
            conn.close()
        print(json.dumps(res))


def outbox_stats(conn, node, timeout=2.0):
    st, data, _ = conn.request(f"edgeleaf.ctl.{node}.outbox", b"", timeout)
    if st != "ok":
        return None
    d = json.loads(data)
    return d.get("ok")


def cmd_outbox(port, node):
    c = connect_retry(int(port), now() + 5)
    print(json.dumps(outbox_stats(c, node)))
    c.close()


def cmd_ctl(port, node, what):
    """ctl.<node>.<what> once; prints the reply's "ok" member as JSON (or the reply)."""
    c = connect_retry(int(port), now() + 5)
    st, data, _ = c.request(f"edgeleaf.ctl.{node}.{what}", b"", 5)
    c.close()
    if st != "ok":
        sys.exit(f"ctl.{node}.{what}: {st}")
    d = json.loads(data)
    print(json.dumps(d.get("ok", d)))


def cmd_waitdepth(port, node, op, target, timeout, interval, t_ref_wall="", stall="30"):
    """Polls ctl.<node>.outbox until depth >= target (op ge) or <= target (op le).

    Times are ms since t_ref_wall (a time.time() value) when given, else since the
    start of polling. Gives up after timeout s, or when the depth did not change for
    `stall` s. Prints JSON: ms to the condition, the last stats, ms at which depth
    first moved (op le: first drop below the starting depth), samples (ms, depth)."""
    target, deadline, interval, stall = int(target), now() + float(timeout), float(interval), float(stall)
    offset = (time.time() - float(t_ref_wall)) if t_ref_wall else 0.0
    t0 = now() - offset
    c = connect_retry(int(port), deadline)
    res = {"samples": []}
    start_depth = None
    changed = now()
    try:
        while True:
            try:
                s = outbox_stats(c, node)
            except (OSError, ConnectionError):
                c.close()
                c = connect_retry(int(port), deadline)
                s = None
            t = round((now() - t0) * 1000, 1)
            if s is not None:
                d = s["depth"]
                if start_depth is None:
                    start_depth = d
                if op == "le" and "first_move_ms" not in res and d < start_depth:
                    res["first_move_ms"] = t
                if not res["samples"] or res["samples"][-1][1] != d:
                    res["samples"].append((t, d))
                    changed = now()
                res["last"] = s
                if (op == "ge" and d >= target) or (op == "le" and d <= target):
                    res["ms"] = t
                    return res
            if now() >= deadline:
                res["error"] = f"depth did not reach {op} {target} within {timeout} s"
                return res
            if now() - changed > stall:
                res["error"] = f"depth stuck at {res['samples'][-1][1] if res['samples'] else '?'} for {stall} s"
                return res
            time.sleep(interval)
    finally:
        c.close()
        if len(res["samples"]) > 40:   # keep the output short
            s = res["samples"]
            res["samples"] = s[:10] + s[-10:]
        print(json.dumps(res))


def cmd_flood(port, subject, n, payload, node="", window="0"):
    """Publishes n messages (no reply subject), then PING/PONG (the server has read
    them all). window 0: as fast as the socket takes them (one burst). window W > 0:
    paced, at most W messages published but not yet appended to node's outbox (its
    `appended` counter, asked on a second connection every 5 ms while waiting).
    Prints JSON with the wall time of the first publish (time.time()) and ms to PONG."""
    n, window = int(n), int(window)
    c = connect_retry(int(port), now() + 5)
    ctl = connect_retry(int(port), now() + 5) if window else None
    base = outbox_stats(ctl, node)["appended"] if window else 0
    one = b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload.encode())
    chunk = one * 1000
    t_wall, t0 = time.time(), now()
    deadline = t0 + 600
    sent, waits, appended = 0, 0, 0
    while sent < n:
        if window:
            while sent - appended >= window:
                if now() >= deadline:
                    sys.exit(f"flood: node {node} stopped appending ({appended} of {sent})")
                time.sleep(0.005)
                waits += 1
                st = outbox_stats(ctl, node)
                if st:
                    appended = st["appended"] - base
        k = min(1000, n - sent)
        c.send(chunk if k == 1000 else one * k)
        sent += k
    c.flush(timeout=120)
    print(json.dumps({"first_publish_wall": t_wall, "sent": sent, "window": window,
                      "pacing_polls": waits, "ms_to_pong": round((now() - t0) * 1000, 1)}))
    c.close()
    if ctl:
        ctl.close()


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def rnd(x):
    return None if x is None else round(x)


def cmd_latency(port, subject, payload, n, warmup, cap_s):
    """Sequential requests: prints JSON with p50/p99/mean (µs) and error counts."""
    c = connect_retry(int(port), now() + 5)
    p = payload.encode()
    errors = {}
    for _ in range(int(warmup)):
        if c.request(subject, p, 2)[0] == "timeout":
            break
    lat = []
    end = now() + float(cap_s)
    in_a_row = 0
    stalled = False
    for _ in range(int(n)):
        if now() >= end:
            break
        st, data, secs = c.request(subject, p, 2)
        if st == "ok":
            lat.append(secs * 1e6)
            in_a_row = 0
        else:
            errors[st] = errors.get(st, 0) + 1
            in_a_row = in_a_row + 1 if st == "timeout" else 0
            if in_a_row >= 3:
                stalled = True   # three 2 s timeouts in a row: give up
                break
    lat.sort()
    print(json.dumps({"n": len(lat), "errors": errors, "stalled": stalled, "p50_us": rnd(pct(lat, 50)),
                      "p99_us": rnd(pct(lat, 99)), "mean_us": rnd(statistics.fmean(lat)) if lat else None,
                      "max_us": rnd(lat[-1]) if lat else None}))
    c.close()


def cmd_throughput(port, subject, payload, inflight, window):
    """Keeps `inflight` requests outstanding for `window` seconds on one connection;
    prints JSON: completed replies/s, errors, and p50/p99 of the per-request time."""
    c = connect_retry(int(port), now() + 5)
    p = payload.encode()
    k, window = int(inflight), float(window)
    outstanding = {}
    errors, done, lat = {}, 0, []
    seq = 0

    def issue(count):
        nonlocal seq
        buf = []
        for _ in range(count):
            seq += 1
            outstanding[str(seq)] = now()
            buf.append(c.request_bytes(subject, p, str(seq)))
        c.send(b"".join(buf))

    t0 = now()
    end = t0 + window
    last_reply = None
    stalled = False
    issue(k)
    while now() < end:
        try:
            m = c.next(min(end, (last_reply or t0) + 5))
        except TimeoutError:
            if now() >= end:
                break
            stalled = True   # nothing for 5 s with requests outstanding
            break
        if m == "PONG":
            continue
        subj, data, status = m
        sent = outstanding.pop(subj.rsplit(".", 1)[-1], None)
        if sent is None:
            continue
        last_reply = now()
        if status is None:
            done += 1
            lat.append((now() - sent) * 1e6)
        else:
            errors[status] = errors.get(status, 0) + 1
        if now() < end:
            issue(1)
    elapsed = window
    if stalled or last_reply is None or end - last_reply > min(1.0, window / 4):
        stalled = True
    # let the last ones finish so the next measurement starts clean
    drain_end = now() + 5
    while outstanding and now() < drain_end:
        try:
            m = c.next(drain_end)
        except TimeoutError:
            break
        if m != "PONG":
            outstanding.pop(m[0].rsplit(".", 1)[-1], None)
    lat.sort()
    if outstanding:
        errors["no reply"] = len(outstanding)
    print(json.dumps({"inflight": k, "done": done, "secs": round(elapsed, 2),
                      "per_s": round(done / elapsed), "errors": errors,
                      "p50_us": rnd(pct(lat, 50)), "p99_us": rnd(pct(lat, 99)),
                      "stalled": stalled,
                      "last_reply_s": None if last_reply is None else round(last_reply - t0, 2)}))
    c.close()


def cmd_stats(*values):
    v = sorted(float(x) for x in values)
    print(f"{v[0]:.0f} {statistics.median(v):.0f} {v[-1]:.0f}")


def cmd_custom(src, dst, tag):
    """Copies a wasm module or component with a custom section appended, so that
    its sha256 is new while the code is the same."""
    def leb(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    name = b"edgeleaf-bench"
    body = leb(len(name)) + name + tag.encode() + os.urandom(16)
    data = open(src, "rb").read() + b"\x00" + leb(len(body)) + body
    open(dst, "wb").write(data)


def cmd_streamcount(port, stream, subject_filter):
    """Messages in a stream under a subject filter (the hub's JetStream API)."""
    c = connect_retry(int(port), now() + 5)
    body = json.dumps({"subjects_filter": subject_filter}).encode()
    st, data, _ = c.request(f"$JS.API.STREAM.INFO.{stream}", body, 5)
    c.close()
    if st != "ok":
        sys.exit(f"stream info: {st}")
    d = json.loads(data)
    subs = (d.get("state") or {}).get("subjects") or {}
    print(json.dumps({"messages": sum(subs.values()), "subjects": subs,
                      "stream_messages": (d.get("state") or {}).get("messages")}))


def cmd_first_hb(port, node, timeout):
    """Prints "ready" once subscribed, then the wall clock and the size of node's next
    heartbeat."""
    c = connect_retry(int(port), now() + 10)
    c.send(f"SUB edgeleaf.hb.{node} 9\r\n".encode())  # sid 1 is the inbox
    c.flush()
    print("ready", flush=True)
    deadline = now() + float(timeout)
    while True:
        m = c.next(deadline)
        if m != "PONG":
            print(f"{time.time():.3f} {len(m[1])}", flush=True)
            return


def mem(pid):
    """RSS and PSS of pid in KiB, from smaps_rollup."""
    vals = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        k, _, v = line.partition(":")
        if k in ("Rss", "Pss"):
            vals[k] = int(v.split()[0])
    return vals.get("Rss", 0), vals.get("Pss", 0)


def cmd_pss(*pids):
    """RSS and PSS in KiB of each pid, on one line."""
    print(" ".join(f"{r} {p}" for r, p in map(mem, pids)))


def cmd_rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            print(line.split()[1])
            return
    print("")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"ports": cmd_ports, "ready": cmd_ready, "request": cmd_request, "probe": cmd_probe,
     "outbox": cmd_outbox, "ctl": cmd_ctl, "waitdepth": cmd_waitdepth, "flood": cmd_flood,
     "latency": cmd_latency, "throughput": cmd_throughput, "stats": cmd_stats,
     "custom": cmd_custom, "rss": cmd_rss, "streamcount": cmd_streamcount,
     "first_hb": cmd_first_hb, "pss": cmd_pss}[cmd](*args)
PY
nt() { "$PY" "$WORK/nt.py" "$@"; }

# Runs the helper in the background (so the trap can stop it) and waits for it.
nt_bg() {
    local pid rc=0
    "$PY" "$WORK/nt.py" "$@" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    return "$rc"
}

# Reads a dotted key from a JSON object on stdin.
jget() { "$PY" -c 'import json,sys
d=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d.get(k) if isinstance(d, dict) else None
print("" if d is None else (json.dumps(d) if isinstance(d, (dict, list)) else d))' "$1"; }

# ---------------------------------------------------------------------------------------
# Hub
HUB_DIR=$WORK/hub
start_hub() {   # first call picks the ports; later calls restart on the same ports and store
    if [[ -z ${HUB_PORT:-} ]]; then
        read -r HUB_PORT HUB_LEAF_PORT <<<"$(nt ports 2)"
        HUB_URL=nats://127.0.0.1:$HUB_PORT
        mkdir -p "$HUB_DIR/js"
        cat >"$HUB_DIR/hub.conf" <<EOF
listen: 127.0.0.1:$HUB_PORT
server_name: bench-hub
jetstream { store_dir: "$HUB_DIR/js", domain: hub }
leafnodes { listen: 127.0.0.1:$HUB_LEAF_PORT }
EOF
    fi
    "$NATS_SERVER" -c "$HUB_DIR/hub.conf" >>"$HUB_DIR/hub.log" 2>&1 &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    nt ready "$HUB_PORT" 30 >/dev/null || die "hub did not accept clients"
}
kill_hub() { # SIGKILL by pid, then wait for the port to be free of it
    stop_pid "$HUB_PID" KILL
}
hub_init() { "$BIN" hub init -s "$HUB_URL" >"$WORK/hub-init.log" 2>&1 || { cat "$WORK/hub-init.log" >&2; die "hub init"; }; }
gen_key() {
    KEY=$WORK/publisher.key
    PUBKEY=$("$BIN" keys gen --out "$KEY" 2>/dev/null | grep -o 'ed25519:[0-9a-f]*' | head -n1)
    [[ -n $PUBKEY ]] || die "keys gen printed no public key"
}

# write_node_conf ID LEAF_PORT DURABILITY [extra TOML]   (state in $WORK/ID)
write_node_conf() {
    local id=$1 port=$2 dur=$3 extra=${4:-}
    mkdir -p "$WORK/$id"
    cat >"$WORK/$id.toml" <<EOF
[node]
id = "$id"
state_dir = "$WORK/$id"
[leaf]
spawn = true
nats_server = "$NATS_SERVER"
listen = "127.0.0.1:$port"
hub_url = "nats-leaf://127.0.0.1:$HUB_LEAF_PORT"
[heartbeat]
interval = "1s"
[security]
trusted_publishers = ["$PUBKEY"]
[outbox]
durability = "$dur"
$extra
EOF
}

# The pid of the running node with id ID (started through the helper), or empty.
node_pid() {
    local pid
    [[ -s $PIDS_FILE ]] || return 0
    while read -r pid; do
        if alive "$pid" && [[ $(cmdline_of "$pid") == *"$WORK/$1.toml"* ]]; then echo "$pid"; fi
    done <"$PIDS_FILE" | tail -n1
}

# probe_json PORT SUBJECTS(comma) PAYLOAD EXPECT TIMEOUT [CMD...] -> JSON for nt probe
probe_json() {
    "$PY" -c 'import json,sys
a=sys.argv[1:]
o={"port":int(a[0]),"subjects":[s for s in a[1].split(",") if s],"payload":a[2],"expect":a[3],
   "timeout":float(a[4]),"req_timeout":0.2,"pause":0.005,"pids_file":a[5],"log":a[6] or None}
if a[7:]: o["cmd"]=a[8:]; o["detach"]=a[7]=="detach"
print(json.dumps(o))' "$@"
}

# Log level of the nodes (only theirs, not the CLI's): info, plus the NATS client's
# events (slow consumer, reconnects), which edgeleaf logs at debug.
NODE_LOG=${NODE_LOG:-info,edgeleaf::connect=debug}

# start_node ID SUBJECTS(comma) PORT  -> starts `edgeleaf node -c $WORK/ID.toml`, prints the
# probe JSON (time from spawn until every subject answered on PORT)
start_node_probe() {
    local id=$1 subjects=$2 port=$3 payload=${4:-ping} expect=${5:-}
    nt_bg probe "$(probe_json "$port" "$subjects" "$payload" "$expect" 60 "$PIDS_FILE" "$WORK/$id.log" \
        detach env "EDGELEAF_LOG=$NODE_LOG" "$BIN" node -c "$WORK/$id.toml")"
}

# start_node_bg ID [BIN]: `BIN node -c $WORK/ID.toml` in the background, its output
# appended to $WORK/ID.log; sets NODE_PID.
start_node_bg() {
    env "EDGELEAF_LOG=$NODE_LOG" "${2:-$BIN}" node -c "$WORK/$1.toml" >>"$WORK/$1.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}

# timed_deploy WASM NAME TRIGGER NODE: a signed `deploy --wait` of WASM as agent NAME on
# TRIGGER to NODE (key $KEY), spawn to exit, in seconds.
timed_deploy() {
    local s e
    s=$EPOCHREALTIME
    "$BIN" deploy "$1" --name "$2" --trigger "$3" --node "$4" --key "$KEY" \
        -s "$HUB_URL" --wait 120s >>"$WORK/deploy.log" 2>&1 || die "deploy $2: $(tail -5 "$WORK/deploy.log")"
    e=$EPOCHREALTIME
    "$PY" -c "print(f'{$e-$s:.3f}')"
}

# stop_node ID: SIGTERM by pid, waits for it to exit (and its leaf with it)
stop_node() {
    local pid
    pid=$(node_pid "$1")
    [[ -n $pid ]] || die "node $1 is not running"
    stop_pid "$pid" TERM
    local lp=$WORK/$1/leaf/nats-server.pid i note=$LAST_STOP
    for ((i = 0; i < 100; i++)); do
        if ! { [[ -f $lp ]] && alive "$(head -n1 "$lp")" && [[ $(cmdline_of "$(head -n1 "$lp")") == *"$WORK"* ]]; }; then
            LAST_STOP=$note
            return 0
        fi
        sleep 0.1
    done
    log "leaf of $1 still running 10 s after its node stopped"
    LAST_STOP="$note; its leaf still ran 10 s later"
}

# Node warnings and errors (tracing level) across the given logs: count, message
node_warnings() {
    cat "$@" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -E ' (WARN|ERROR) |slow consumer' \
        | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -n 30 || true
}
