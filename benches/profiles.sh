#!/usr/bin/env bash
# Release-profile trade-off: binary size against agent speed, for the settings that
# matter (opt-level, lto, codegen-units). Each variant is a full release build in its
# own target dir (target/profiles/<name>), so this takes a while (about 10 minutes a
# variant on 2 cores). For each: the stripped size of `edgeleaf`, its build time, and
# the in-process echo.wasm / upper-c.wasm invocation and compile times from
# `benches/agents.rs --no-nats`.
#
#   bash benches/profiles.sh [VARIANT...]     # default: all below
#
# Variants: name=opt-level,lto,codegen-units
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f wasm-agents/dist/echo.wasm ] || bash wasm-agents/build.sh

variants=(
  "o3-thinlocal-cgu16=3,false,16"
  "o3-fat-cgu1=3,fat,1"
  "os-fat-cgu1=s,fat,1"
)
if [ $# -gt 0 ]; then
  wanted=("$@"); picked=()
  for v in "${variants[@]}"; do for w in "${wanted[@]}"; do [ "${v%%=*}" = "$w" ] && picked+=("$v"); done; done
  variants=("${picked[@]}")
fi

rows=()
for v in "${variants[@]}"; do
  name="${v%%=*}"; IFS=, read -r opt lto cgu <<<"${v#*=}"
  # The first variant is what Cargo.toml's [profile.release] says: the usual target dir.
  dir="target/profiles/$name"
  [ "$v" != "${variants[0]}" ] || [ $# -gt 0 ] || dir=target
  echo "[profiles] $name: opt-level=$opt lto=$lto codegen-units=$cgu" >&2
  export CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt" CARGO_PROFILE_RELEASE_LTO="$lto" \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS="$cgu" CARGO_PROFILE_BENCH_OPT_LEVEL="$opt" \
    CARGO_PROFILE_BENCH_LTO="$lto" CARGO_PROFILE_BENCH_CODEGEN_UNITS="$cgu" CARGO_TARGET_DIR="$dir"
  start=$SECONDS
  cargo build --locked --release --bin edgeleaf >&2
  took=$(( SECONDS - start ))
  size=$(stat -c %s "$dir/release/edgeleaf")
  cargo bench --locked --bench agents --no-run >&2
  report="$(cargo bench --locked --bench agents -- --no-nats 2>/dev/null)"
  # p50 of the two in-process rows and the compile/cache medians, from the tables.
  echo "$report" > "$dir/agents-report.md"
  echo_p50=$(echo "$report" | awk -F'|' '/echo.wasm \(component\)/ && !e {gsub(/ /,"",$5); print $5; e=1}')
  upper_p50=$(echo "$report" | awk -F'|' '/upper-c.wasm \(WASI command\)/ && !u {gsub(/ /,"",$5); print $5; u=1}')
  compile=$(echo "$report" | awk -F'|' '/empty cache dir/ && !c {gsub(/ /,"",$3); print $3; c=1}')
  rows+=("| $name | $opt | $lto | $cgu | $(awk "BEGIN{printf \"%.1f\", $size/1048576}") MiB | ${took} s | $echo_p50 | $upper_p50 | $compile |")
done
unset CARGO_TARGET_DIR
echo
echo "| variant | opt-level | lto | codegen-units | stripped size | build | echo p50 µs | upper-c p50 µs | threshold.wasm compile ms |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
