#!/usr/bin/env bash
# The size of the edgeleaf binary for a target, and what it is made of:
#
#   bash benches/size.sh TARGET [--runtime-only]
#
# Builds the release binary with scripts/cross-build.sh (the release profile of
# Cargo.toml, but with symbols kept: CARGO_PROFILE_RELEASE_STRIP=false), strips a copy
# with the target's binutils for the size a device installs, and sums the sizes of
# the code symbols per crate, like cargo-bloat does (a demangled symbol's first path
# segment names its crate; generic code is counted where it was instantiated
# under the crate whose type it names). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: bash benches/size.sh TARGET [--runtime-only]}"
shift
CARGO_PROFILE_RELEASE_STRIP=false bash scripts/cross-build.sh "$target" --release "$@" >&2
bin="target/$target/release/edgeleaf"
case "$target" in
  x86_64-*) prefix="" ;;
  aarch64-*) prefix="aarch64-linux-gnu-" ;;
  armv7-*) prefix="arm-linux-gnueabihf-" ;;
  *) echo "size: no binutils known for $target" >&2; exit 2 ;;
esac
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/edgeleaf"
"${prefix}strip" "$work/edgeleaf"
stripped=$(stat -c %s "$work/edgeleaf")
"${prefix}nm" -S --size-sort -C "$bin" > "$work/symbols"
"${prefix}size" -A "$bin" > "$work/sections"
python3 - "$work/symbols" "$work/sections" "$stripped" "$target" "$*" <<'EOF'
import re, sys
from collections import Counter
symbols, sections, stripped, target, flags = sys.argv[1:]
stripped = int(stripped)
sizes = Counter()
total = 0
for line in open(symbols):
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2] not in "Tt":
        continue
    size = int(parts[1], 16)
    name = parts[3].strip()
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    crate = m.group(1) if m else ("[C and runtime]" if not name.startswith("_") else "[other]")
    if crate in ("core", "alloc", "std"):
        crate = "std/core/alloc"
    sizes[crate] += size
    total += size
text = 0
for line in open(sections):
    f = line.split()
    if len(f) >= 2 and f[0] == ".text":
        text = int(f[1])
mib = lambda b: f"{b / 1048576:.2f} MiB"
print(f"`{target}` {flags or '(default features)'}: stripped binary **{stripped:,} bytes ({mib(stripped)})**, `.text` {text:,} bytes\n")
print("| crate (code symbols) | bytes | share of .text |")
print("|---|---:|---:|")
for crate, size in sizes.most_common(14):
    print(f"| {crate} | {size:,} | {100 * size / max(text, 1):.1f} % |")
rest = total - sum(s for _, s in sizes.most_common(14))
print(f"| (other crates) | {rest:,} | {100 * rest / max(text, 1):.1f} % |")
EOF
