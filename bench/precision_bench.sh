#!/usr/bin/env bash
# Precision and memory-format modes on this CPU, in one run, side by side (issue 14):
# Python eager (fp32 NCHW, fp32 channels-last, bf16 channels-last, autocast bf16),
# raw LibTorch per mode (bench/precision_bench: the network alone on a tensor
# already in the mode), and the real server per mode through `model-client bench`
# at concurrency 1 and 16 (--precision, --memory_format), with the ratios to Python
# eager fp32 NCHW; plus each mode's accuracy against Python float32 on 64 inputs
# (random-weight VGG16, and a variant with well-separated logits). Writes
# bench/results/precision-<date>.md and prints it.
#
#   bash bench/precision_bench.sh      (after `make build`; ~10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
SECS=${SECONDS_PER:-15}
W=bench/work/precision
mkdir -p "$W" bench/results
MODES=fp32:contiguous,fp32:channels_last,bf16:channels_last

echo "Python eager (batch 8) ..." >&2
/usr/bin/python3 bench/precision_python.py "$W" cpu 8 "$SECS" "$THREADS" > "$W/python.jsonl"
echo "raw LibTorch and accuracy per mode ..." >&2
"$BUILD/bench/precision_bench" file="$W/vgg16/1/model_weights.pth" arch=vgg16 device=cpu \
  modes=$MODES inputs="$W/inputs.npy" reference="$W/vgg16_ref.npy" batch=8 seconds="$SECS" \
  concurrency= threads="$THREADS" > "$W/cpp.jsonl"
"$BUILD/bench/precision_bench" file="$W/vgg16_sep/1/model_weights.pth" arch=vgg16 device=cpu \
  modes=$MODES inputs="$W/inputs.npy" reference="$W/vgg16_sep_ref.npy" batch=8 raw=0 \
  concurrency= threads="$THREADS" | sed 's/"mode": "/"mode": "sep:/' > "$W/cpp_sep.jsonl"

source bench/serve_vgg16.sh
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
: > "$W/server.jsonl"
for mode in ${MODES//,/ }; do
  echo "server $mode ..." >&2
  serve_vgg16 "$W" "$W/server.log" --intra_op_threads "$THREADS" \
    --precision "${mode%%:*}" --memory_format "${mode##*:}"
  "$BUILD/client/model-client" --target "$target" status vgg16 >&2
  "$BUILD/client/model-client" --target "$target" bench --model vgg16 --shape 3,224,224 \
    --concurrency 1,16 --duration "${SECS}s" --warmup 3s --json "$W/bench.json" > /dev/null
  /usr/bin/python3 -c '
import json, sys
for r in json.load(open(sys.argv[1])):
    print(json.dumps({"what": "server", "mode": sys.argv[2], "concurrency": r["concurrency"],
                      "samples_per_s": r["samples_per_second"], "p50_ms": r["p50_ms"]}))
' "$W/bench.json" "$mode" >> "$W/server.jsonl"
  kill "$server_pid"; wait "$server_pid" || true; server_pid=""
done

out="bench/results/precision-$(date -u +%Y-%m-%d).md"
{
  echo "# Precision and memory-format modes, VGG16 224x224 on CPU"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
       "$(grep -o -m1 'avx512_bf16' /proc/cpuinfo || echo 'no avx512_bf16'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "- LibTorch / PyTorch: Debian 1.13.1 (the same library under both); threads: $THREADS"
  echo "- command: \`bash bench/precision_bench.sh\` (SECONDS_PER=$SECS: each figure is one run of that many seconds)"
  echo "- Python eager and raw LibTorch at batch 8; the server with its defaults (batches up to 8," \
       "2 workers) through \`model-client bench --concurrency 1,16\`, one 3x224x224 float32 sample per request"
  echo
  /usr/bin/python3 bench/precision_report.py "CPU" "$W/python.jsonl" "$W/cpp.jsonl" \
    "$W/cpp_sep.jsonl" "$W/server.jsonl"
} > "$out"
cat "$out"
