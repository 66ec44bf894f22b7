#!/usr/bin/env bash
# Writes the seed corpus for the fuzz targets into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/config corpus/deployment corpus/control
cp ../config/edgeleaf.toml corpus/config/full.toml
cp ../config/device.toml corpus/config/device.toml
printf 'sensors.* sensors.a' > corpus/control/pattern-star
printf 'alerts.> alerts.t1.high' > corpus/control/pattern-tail
printf '{"tags":{"site":"a"}}' > corpus/control/ping
printf 'tag.site.a.echo' > corpus/control/key
spec='{"agent":{"name":"echo","triggers":["demo.echo"],"limits":{"memory":16777216,"timeout_ms":5000,"max_concurrency":4,"max_output":1048576,"kv_quota":1048576},"allow_publish":["alerts.>"],"config":{"k":"v"}},"module":{"digest":"ab","size":3},"version":1,"issued_at":"2026-11-26T00:00:00Z","nonce":"n","target":"node.n1.echo","publisher":null,"keep_kv":false}'
printf '%s' "$spec" > corpus/deployment/spec.json
printf '{"spec":"%s","signature":null,"publisher":null}' "$(printf '%s' "$spec" | base64 -w0)" > corpus/deployment/envelope.json
