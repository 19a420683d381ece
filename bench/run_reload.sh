#!/usr/bin/env bash
# Hot reload of VGG16: LoadModel call to serving, and Predict latency while the
# model is reloaded every few seconds versus without reloads. Writes
# bench/results/reload-<date>.md.
#
#   bash bench/run_reload.sh            (after `make build`; ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-30}
CONCURRENCY=${CONCURRENCY:-4}
work=bench/work
mkdir -p "$work" bench/results
[ -f "$work/vgg16/1/model_weights.pth" ] || /usr/bin/python3 scripts/make_demo_store.py "$work" >/dev/null
# Version 2: the same bytes under a new version number (a reload still reads,
# verifies, builds and warms up all 528 MB).
if [ ! -d "$work/vgg16/2" ]; then
  mkdir -p "$work/vgg16/.staging-bench"
  ln "$work/vgg16/1/model_weights.pth" "$work/vgg16/.staging-bench/model_weights.pth"
  cp "$work/vgg16/1/manifest.json" "$work/vgg16/.staging-bench/manifest.json"
  mv "$work/vgg16/.staging-bench" "$work/vgg16/2"
fi
client="$BUILD/client/model-client"
rm -f "$work/port"
"$BUILD/server/model-server" --store "$work" --model vgg16=vgg16 --listen 127.0.0.1:0 \
  --port_file "$work/port" --metrics_listen 127.0.0.1:0 --http_listen '' > "$work/server-reload.log" 2>&1 &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
target="127.0.0.1:$(cat "$work/port")"
for _ in $(seq 600); do "$client" --target "$target" status vgg16 2>/dev/null | grep -q READY && break; sleep 0.1; done

bench() { "$client" --target "$target" bench --model vgg16 --shape 3,224,224 \
  --concurrency "$CONCURRENCY" --duration "${DURATION}s" --warmup 5s --json "$1" > /dev/null; }

bench "$work/reload-baseline.json"

bench "$work/reload-during.json" &
bench_pid=$!
sleep 5  # the warm-up
: > "$work/reload-times.txt"
end=$(( $(date +%s) + DURATION - 3 ))
v=1
while [ "$(date +%s)" -lt "$end" ]; do
  start=$(date +%s%N)
  "$client" --target "$target" --timeout_ms 120000 load vgg16 --version "$v" > /dev/null
  echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$work/reload-times.txt"
  v=$(( 3 - v ))
  sleep 1
done
wait "$bench_pid"

out="bench/results/reload-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$out" "$CONCURRENCY" "$DURATION" <<'PY'
import datetime, json, os, statistics, sys
work, out, conc, duration = sys.argv[1:]
times = [int(l) for l in open(f"{work}/reload-times.txt") if l.strip()]
base = json.load(open(f"{work}/reload-baseline.json"))[0]
during = json.load(open(f"{work}/reload-during.json"))[0]
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
L = []
L.append("# VGG16 hot reload: time to serve, and Predict latency during reloads")
L.append("")
L.append(f"- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}")
L.append(f"- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1, OpenBLAS")
L.append(f"- command: `bash bench/run_reload.sh` (server defaults; load: `model-client bench --concurrency {conc} --duration {duration}s`)")
L.append("- a reload = `model-client load vgg16 --version N` alternating 1 and 2 (528 MB state dict: "
         "resolve, sha256 beside the read, strict build, one warm-up forward pass, swap), one per second after the previous returned")
L.append("")
L.append(f"Reloads: {len(times)}; LoadModel call to serving: median **{statistics.median(times):.0f} ms**, "
         f"min {min(times)} ms, max {max(times)} ms (under concurrency-{conc} Predict load on the same 2 cores).")
L.append("")
L.append("| Predict load | samples/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
for name, r in (("no reloads", base), (f"{len(times)} reloads during the run", during)):
    errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"
    L.append(f"| {name} | {r['samples_per_second']:.2f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
             f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {errs} |")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
