#!/usr/bin/env bash
# modelserving.v1 Predict against the Open Inference Protocol's ModelInfer on the same
# server, VGG16 224x224 float32, one sample per request, at concurrency 1 and 16, one
# run, alternating the protocols. Writes bench/results/protocols-<date>.md and prints it.
#
#   bash bench/protocol_bench.sh      (after `make build`; ~3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
source bench/serve_vgg16.sh  # BUILD, work, demo_store, serve_vgg16
demo_store
server_pid=""
trap '[ -n "$server_pid" ] && kill $server_pid 2>/dev/null || true' EXIT
serve_vgg16 "$work" "$work/server-protocols.log"
for round in 1 2; do
  for p in v1 v2; do
    "$BUILD/client/model-client" --target "$target" --protocol "$p" bench --model vgg16 \
      --shape 3,224,224 --concurrency 1,16 --duration "$DURATION" --warmup 3s \
      --json "$work/protocol-$p-$round.json" > /dev/null
  done
done
out="bench/results/protocols-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$DURATION" > "$out" <<'PY'
import json, os, sys, datetime
work, duration = sys.argv[1:]
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
print("# Predict (modelserving.v1) vs ModelInfer (Open Inference Protocol), VGG16 on CPU\n")
print(f"- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}")
print(f"- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian)")
print(f"- command: `bash bench/protocol_bench.sh` (`model-client [--protocol v2] bench --concurrency 1,16 --duration {duration}`, "
      "one 3x224x224 float32 sample per request, server defaults; two rounds, v1 then v2 each round)\n")
print("| round | concurrency | v1 samples/s | v2 samples/s | v2 / v1 | v1 p50 ms | v2 p50 ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for rnd in (1, 2):
    a = {r["concurrency"]: r for r in json.load(open(f"{work}/protocol-v1-{rnd}.json"))}
    b = {r["concurrency"]: r for r in json.load(open(f"{work}/protocol-v2-{rnd}.json"))}
    for c in sorted(a):
        x, y = a[c]["samples_per_second"], b[c]["samples_per_second"]
        print(f"| {rnd} | {c} | {x:.2f} | {y:.2f} | {y / x:.3f} | {a[c]['p50_ms']:.1f} | {b[c]['p50_ms']:.1f} |")
PY
cat "$out"
