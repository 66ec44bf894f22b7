#!/usr/bin/env bash
# Checks that systemd/edgeleaf.service's SystemCallFilter= allows every system call
# edgeleaf makes: runs `edgeleaf up` (hub, leaf and node) under `strace -f`, deploys
# and invokes the echo agent, stops it, and compares the calls seen with the unit's
# filter as `systemd-analyze syscall-filter` expands it. Loopback only; stops only
# what it started. Needs strace and systemd-analyze (apt-get install strace systemd).
#
#   scripts/syscall-audit.sh [BINARY]      # default: target/debug/edgeleaf
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:-target/debug/edgeleaf}")"
[ -f wasm-agents/dist/echo.wasm ] || bash wasm-agents/build.sh
work="$(mktemp -d)"
pid=""
# `edgeleaf up` itself, not strace: a background strace ignores SIGINT.
stop_up() {
  local up
  up="$(ps -o pid= --ppid "$pid" | tr -d ' ' | head -1)"
  [ -z "$up" ] || kill -INT "$up"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" ${up:+"$up"} 2>/dev/null || true
}
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then stop_up; fi
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hub_port=$(port) leaf_port=$(port) ln_port=$(port)

strace -f -qq -o "$work/trace" "$bin" up --state-dir "$work/state" --node-id audit \
  --hub-port "$hub_port" --leaf-port "$leaf_port" --hub-leafnode-port "$ln_port" \
  > "$work/up.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [ -f "$work/state/up.json" ] && break; sleep 0.2; done
[ -f "$work/state/up.json" ] || { cat "$work/up.log" >&2; echo "syscall-audit: edgeleaf up did not come up" >&2; exit 1; }
hub="nats://127.0.0.1:$hub_port"
"$bin" deploy wasm-agents/dist/echo.wasm --name echo --trigger audit.echo --all \
  --key "$work/state/publisher.key" -s "$hub" --wait 30s >/dev/null
for i in 1 2 3; do
  [ "$("$bin" invoke --node audit --agent echo "hi$i" -s "$hub")" = "hi$i" ] || { echo "syscall-audit: echo failed" >&2; exit 1; }
done
stop_up; wait "$pid" || true; pid=""

grep -oE '^[0-9]+ +[a-z_0-9]+\(' "$work/trace" | awk '{print $2}' | tr -d '(' | sort -u > "$work/used"
python3 - "$work/used" systemd/edgeleaf.service <<'PY'
import re, subprocess, sys
used = [l.strip() for l in open(sys.argv[1]) if l.strip()]
groups, cur = {}, None
for line in subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout.splitlines():
    if line.startswith("@"):
        cur = line.split()[0]; groups[cur] = []
    elif cur and line.strip() and not line.strip().startswith("#"):
        groups[cur].append(line.strip())
def expand(item):
    return set().union(*(expand(x) for x in groups.get(item, []))) if item.startswith("@") else {item}
allowed = set()
for line in open(sys.argv[2]):
    m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
    if not m:
        continue
    names = set().union(*(expand(x) for x in m.group(2).split()))
    allowed = allowed - names if m.group(1) else allowed | names
denied = [u for u in used if u not in allowed]
print(f"syscall-audit: {len(used)} distinct system calls seen, {len(allowed)} allowed by the unit")
if denied:
    print("syscall-audit: NOT allowed by the unit: " + " ".join(denied)); sys.exit(1)
print("syscall-audit: OK, every call is inside the unit's SystemCallFilter")
PY
