#!/usr/bin/env bash
# Dynamic batching, measured in one run on one machine:
#  (a) raw in-process LibTorch forward throughput of VGG16 at batch 1, 2, 4, 8, 16;
#  (b) model-server through `model-client bench` at concurrency 1, 4, 16 with
#      batching off (--max_batch_size 1) and on (the default flags: max 8 samples,
#      2000 us, two batch workers sharing the intra-op threads), plus, at
#      concurrency 16, one batch worker with every thread, and two workers with
#      one thread each;
# and a table of server / raw. Writes bench/results/batching-<date>.md.
#
#   bash bench/run_batching.sh            (after `make build`; ~7 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-5s}
work=bench/work
mkdir -p "$work" bench/results
[ -f "$work/vgg16/1/model_weights.pth" ] || /usr/bin/python3 scripts/make_demo_store.py "$work" >/dev/null

raw=$("$BUILD/bench/load_forward_bench" "$work" vgg16 vgg16 "$THREADS" 5 1,2,4,8,16 forward_only)

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT

run_server_bench() {  # name, extra server flags...
  local name=$1; shift
  rm -f "$work/port"
  "$BUILD/server/model-server" --store "$work" --model vgg16=vgg16 --listen 127.0.0.1:0 \
    --port_file "$work/port" --metrics_listen 127.0.0.1:0 --http_listen '' "$@" > "$work/server-$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
  local target="127.0.0.1:$(cat "$work/port")"
  for _ in $(seq 600); do
    "$BUILD/client/model-client" --target "$target" status vgg16 2>/dev/null | grep -q READY && break
    sleep 0.1
  done
  "$BUILD/client/model-client" --target "$target" bench --model vgg16 --shape 3,224,224 \
    --concurrency "${LEVELS:-1,4,16}" --duration "$DURATION" --warmup "$WARMUP" \
    --json "$work/bench-$name.json" > "$work/bench-$name.txt"
  kill "$server_pid"; wait "$server_pid" || true; server_pid=""
}

run_server_bench off --max_batch_size 1 --intra_op_threads "$THREADS"
run_server_bench on --intra_op_threads "$THREADS"
LEVELS=16 run_server_bench on_1worker --batch_workers 1 --intra_op_threads "$THREADS"
LEVELS=16 run_server_bench on_2workers --batch_workers 2 --intra_op_threads 1

out="bench/results/batching-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$out" "$THREADS" "$DURATION" "$WARMUP" <<PY
import json, subprocess, sys, datetime, os
work, out, threads, duration, warmup = sys.argv[1:]
raw = {}
for line in """$raw""".splitlines():
    d = json.loads(line)
    if d["what"].startswith("cpp_forward_b"):
        b = int(d["what"][len("cpp_forward_b"):])
        raw[b] = d["ms"]
best = max(b * 1000 / ms for b, ms in raw.items())
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
lines = []
w = lines.append
w("# Dynamic batching: VGG16 on CPU, server vs raw LibTorch")
w("")
w(f"- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}")
w(f"- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian), OpenBLAS (openmp)")
w(f"- command: \`bash bench/run_batching.sh\` (intra-op threads {threads}; client and server on the same machine, loopback)")
w(f"- server bench: \`model-client bench --concurrency 1,4,16 --duration {duration} --warmup {warmup}\`, 1 x 3x224x224 float32 per request")
w("")
w("## (a) raw in-process forward (VGG16, eval, median of 5 after a warm-up pass)")
w("")
w("| batch | ms / batch | samples/s |")
w("| ---: | ---: | ---: |")
for b in sorted(raw):
    w(f"| {b} | {raw[b]:.1f} | {b * 1000 / raw[b]:.2f} |")
w("")
w(f"Best raw throughput: **{best:.2f} samples/s**; raw batch-1 forward: **{raw[1]:.1f} ms**.")
w("")
w("## (b) server through model-client bench")
w("")
w("| batching | concurrency | samples/s | x best raw | p50 ms | p50 - raw b1 ms | p90 | p99 | max | errors |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
names = {"off": "off (max_batch_size 1)", "on": "on (defaults: max 8, 2000 us, 2 workers sharing threads)",
         "on_1worker": "on, 1 worker x all threads", "on_2workers": "on, 2 workers x 1 thread each"}
for name in ("off", "on", "on_1worker", "on_2workers"):
    for r in json.load(open(f"{work}/bench-{name}.json")):
        errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"
        w(f"| {names[name]} | {r['concurrency']} | {r['samples_per_second']:.2f} | "
          f"{r['samples_per_second'] / best:.2f} | {r['p50_ms']:.1f} | {r['p50_ms'] - raw[1]:+.1f} | "
          f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {errs} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
