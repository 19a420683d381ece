#!/usr/bin/env bash
# torch.export programs served by the interpreter, against Python and TorchScript (the
# torch.export issue's bench), one run: ResNet-18 (random weights) exported with a
# dynamic batch (model.pt2, format EXPORTED_PROGRAM), scripted (model.pt) and compiled
# by AOTInductor (model.pt2, format AOTI_PACKAGE, in its sandboxed worker), each
# served with the defaults through `model-client bench --concurrency 16` (one
# 3x224x224 sample per request; the queue makes batches of 8), against Python's eager
# model and ep.module() at batch 8. Needs torch.export, so it runs in the Debian 13
# root: `scripts/debian13.sh --run "bash bench/export_bench.sh"` (after a Debian 13
# build, build-debian13/). Writes bench/results/export-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-debian13}
THREADS=${THREADS:-$(nproc)}
SECS=${SECONDS_PER:-20}
W=bench/work/export
rm -rf "$W"
mkdir -p "$W" bench/results
echo "Python: export, script, eager and ep.module() rates ..." >&2
/usr/bin/python3 bench/export_python.py "$W" "$SECS" "$THREADS" > "$W/python.json"

server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
: > "$W/server.jsonl"
serve() {  # serve MODEL: the server on the store with MODEL loaded, benched; a JSON line
  local model=$1
  rm -f "$W/port"
  "$BUILD/server/model-server" --store "$W" --model "$model" --listen 127.0.0.1:0 \
    --port_file "$W/port" --metrics_listen '' --http_listen '' --state_dir none \
    --intra_op_threads "$THREADS" > "$W/server-$model.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$W/port" ] && break; sleep 0.1; done
  local target="127.0.0.1:$(cat "$W/port")"
  for _ in $(seq 1200); do
    "$BUILD/client/model-client" --target "$target" status "$model" 2>/dev/null | grep -q READY && break
    sleep 0.1
  done
  "$BUILD/client/model-client" --target "$target" bench --model "$model" --shape 3,224,224 \
    --concurrency 16 --duration "${SECS}s" --warmup 3s --json "$W/bench.json" > /dev/null
  /usr/bin/python3 -c '
import json, sys
for r in json.load(open(sys.argv[1])):
    print(json.dumps({"model": sys.argv[2], "samples_per_s": r["samples_per_second"],
                      "p50_ms": r["p50_ms"]}))
' "$W/bench.json" "$model" >> "$W/server.jsonl"
  kill "$server_pid"; wait "$server_pid" || true; server_pid=""
}
for m in resnet18-export resnet18-torchscript resnet18-aoti; do
  echo "server $m ..." >&2
  serve "$m"
done
out="bench/results/export-$(date -u +%Y-%m-%d).md"
{
  echo "# torch.export programs served by the interpreter: ResNet-18, 224x224, CPU"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB; Debian 13 root"
  echo "- LibTorch / PyTorch: $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') (Debian; the same library under both); threads: $THREADS"
  echo "- command: \`scripts/debian13.sh --run \"bash bench/export_bench.sh\"\` (SECONDS_PER=$SECS: each figure is one run of that many seconds)"
  echo "- served: the server's defaults (batches up to 8, 2 workers; TorchScript and the AOTInductor package in sandboxed workers, the program in process) through \`model-client bench --concurrency 16\`"
  echo
  /usr/bin/python3 - "$W/python.json" "$W/server.jsonl" <<'PY'
import json, sys
py = json.load(open(sys.argv[1]))
sv = {r['model']: r for r in map(json.loads, open(sys.argv[2]))}
e, m = py['eager_b8_per_s'], py['ep_module_b8_per_s']
i, t = sv['resnet18-export']['samples_per_s'], sv['resnet18-torchscript']['samples_per_s']
print('| Python eager (b8) | Python ep.module() (b8) | interpreter served | TorchScript served | interpreter / eager | interpreter / TorchScript |')
print('| ---: | ---: | ---: | ---: | ---: | ---: |')
print(f'| {e:.2f}/s | {m:.2f}/s | {i:.2f}/s | {t:.2f}/s | {i / e:.3f} | {i / t:.3f} |')
a, pa = sv['resnet18-aoti']['samples_per_s'], py['aoti_b8_per_s']
print()
print(f'AOTInductor package (compiled in {py["aoti_compile_s"]:.0f} s by aoti_compile_and_package, '
      'served in its sandboxed worker with the program as architecture.pt2):')
print()
print('| Python aoti_load_package (b8) | package served | served / Python package | package / interpreter served |')
print('| ---: | ---: | ---: | ---: |')
print(f'| {pa:.2f}/s | {a:.2f}/s | {a / pa:.3f} | {a / i:.3f} |')
PY
} > "$out"
cat "$out"
