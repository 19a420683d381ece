#!/usr/bin/env bash
# Batching when a worker is idle (issue 26, item 4), in one run on one machine:
# VGG16 (fp32, 3x224x224) and the tests' tiny VGG (3x32x32) served with the new
# default (a free worker starts at once while no other batch runs) and with
# --batch_wait_when_idle (every batch waits --batch_timeout_us = 2000 us for
# company, the old behaviour); `model-client bench` at concurrency 1, 16 and 64,
# one sample per request: p50 latency and samples/s, and the mean batch size from
# /metrics. Writes bench/results/batch-wait-<date>.md.
#
#   bash bench/batch_wait_bench.sh      (after `make test`: uses its tiny fixture; ~6 min)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/serve_vgg16.sh
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
demo_store
tiny_store="$work/tiny_store"
mkdir -p "$tiny_store/tiny/1"
cp -n "$BUILD/fixtures/tiny/model_weights.pth" "$tiny_store/tiny/1/" 2>/dev/null || true
tiny_arch=$(cat "$BUILD/fixtures/tiny/arch.txt")
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true' EXIT

batch_stats() {  # STORE -> "sum count" of modelserver_batch_size (0 0 before the first batch)
  curl -s "127.0.0.1:$(cat "$1/mport")/metrics" |
    awk '/^modelserver_batch_size_sum/ {s=$2} /^modelserver_batch_size_count/ {c=$2} END {print s+0, c+0}'
}

run() {  # NAME STORE MODEL ARCH SHAPE [server flags...]
  local name=$1 store=$2 model=$3 arch=$4 shape=$5
  shift 5
  rm -f "$store/port" "$store/mport"
  "$BUILD/server/model-server" --store "$store" --model "$model=$arch" --listen 127.0.0.1:0 \
    --port_file "$store/port" --metrics_listen 127.0.0.1:0 --metrics_port_file "$store/mport" \
    --http_listen '' --max_queue_size 256 --shutdown_grace_seconds 1 "$@" > "$work/wait-$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$store/port" ] && [ -s "$store/mport" ] && break; sleep 0.1; done
  local target="127.0.0.1:$(cat "$store/port")"
  for _ in $(seq 600); do
    "$BUILD/client/model-client" --target "$target" status "$model" 2>/dev/null | grep -q READY && break
    sleep 0.1
  done
  for c in 1 16 64; do
    local before after
    before=$(batch_stats "$store")
    "$BUILD/client/model-client" --target "$target" bench --model "$model" --shape "$shape" \
      --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" \
      --json "$work/wait-$name-c$c.json" > /dev/null
    after=$(batch_stats "$store")
    echo "$name $c $before $after" >> "$work/wait-batches.txt"
  done
  kill "$server_pid"; wait "$server_pid" || true; server_pid=""
}

rm -f "$work/wait-batches.txt"
run vgg16-new "$work" vgg16 vgg16 3,224,224
run vgg16-old "$work" vgg16 vgg16 3,224,224 --batch_wait_when_idle
run tiny-new "$tiny_store" tiny "$tiny_arch" 3,32,32
run tiny-old "$tiny_store" tiny "$tiny_arch" 3,32,32 --batch_wait_when_idle

out="bench/results/batch-wait-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$out" "$DURATION" "$WARMUP" <<'PY'
import datetime, json, os, subprocess, sys
work, out, duration, warmup = sys.argv[1:]
batches = {}
for line in open(os.path.join(work, 'wait-batches.txt')):
    name, c, *v = line.split()
    s0, n0, s1, n1 = [float(x) for x in v]  # sum count before, sum count after
    batches[(name, int(c))] = (s1 - s0) / max(1, n1 - n0)
cpu = subprocess.run(['sh', '-c', "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
rows = []
for model in ('vgg16', 'tiny'):
    for c in (1, 16, 64):
        cells = []
        for mode in ('old', 'new'):
            j = json.load(open(os.path.join(work, f'wait-{model}-{mode}-c{c}.json')))
            lv = j['levels'][0] if 'levels' in j else j[0]
            cells.append((lv, batches[(f'{model}-{mode}', c)]))
        (o, bo), (n, bn) = cells
        rows.append(f"| {model} | {c} | {o['p50_ms']:.2f} | {n['p50_ms']:.2f} | "
                    f"{o['samples_per_second']:.1f} | {n['samples_per_second']:.1f} | "
                    f"{n['samples_per_second'] / o['samples_per_second']:.2f} | {bo:.2f} | {bn:.2f} |")
with open(out, 'w') as f:
    f.write(f"""# Batching when a worker is idle: wait for company (old) vs start at once (new)

- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}
- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian), OpenBLAS (openmp); no GPU
- command: `bash bench/batch_wait_bench.sh` (server defaults: max batch 8, --batch_timeout_us 2000,
  2 batch workers, queue 256; client and server on the same machine, loopback)
- old: `--batch_wait_when_idle` (every batch waits up to 2000 us to fill); new: the default (a free
  worker starts at once while no other batch of the model runs; the 2000 us apply only while
  another batch runs)
- per level: `model-client bench --concurrency C --duration {duration} --warmup {warmup}`, 1 sample per
  request; mean batch = batch_size sum / count over the level (from /metrics)

| model | concurrency | p50 ms old | p50 ms new | samples/s old | samples/s new | new / old | mean batch old | mean batch new |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + "\n")
print(open(out).read())
PY
