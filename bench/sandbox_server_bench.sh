#!/usr/bin/env bash
# The sandbox through the whole server (issue 22): TorchScript served by default (each
# version in a sandboxed model-worker) vs --trust_torchscript (in process), one run on
# one machine, the modes alternated twice: VGG16 scripted by torch (the make-test
# fixture vgg16_ts_script, 3x224x224) at concurrency 16, the tiny scripted VGG
# (tiny_ts_script, 3x32x32) at 16 and 64, 1 sample per request (`model-client bench`),
# and each version's load time from the server's log. Writes
# bench/results/sandbox-server-<date>.md.
#
#   bash bench/sandbox_server_bench.sh     (after `make test`: uses its fixtures; ~6 min)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
work=bench/work/sandbox
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-5s}
rm -rf "$work" && mkdir -p "$work/store/vgg16ts/1" "$work/store/tiny/1" bench/results
ln "$BUILD/fixtures/vgg16_ts_script/model.pt" "$work/store/vgg16ts/1/model.pt" 2>/dev/null ||
  cp "$BUILD/fixtures/vgg16_ts_script/model.pt" "$work/store/vgg16ts/1/model.pt"
cp "$BUILD/fixtures/tiny_ts_script/model.pt" "$work/store/tiny/1/model.pt"
server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true' EXIT

run() {  # NAME [server flags...]
  local name=$1
  shift
  rm -f "$work/port"
  "$BUILD/server/model-server" --store "$work/store" --model vgg16ts --model tiny \
    --listen 127.0.0.1:0 --port_file "$work/port" --metrics_listen '' --http_listen '' \
    --state_dir none --max_queue_size 256 --shutdown_grace_seconds 1 "$@" > "$work/$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$work/port" ] && break; sleep 0.1; done
  local target="127.0.0.1:$(cat "$work/port")"
  for m in vgg16ts tiny; do
    for _ in $(seq 1200); do
      "$BUILD/client/model-client" --target "$target" status "$m" 2>/dev/null | grep -q READY && break
      sleep 0.1
    done
  done
  "$BUILD/client/model-client" --target "$target" bench --model vgg16ts --shape 3,224,224 \
    --concurrency 16 --duration "$DURATION" --warmup "$WARMUP" --json "$work/$name-vgg16ts.json" > /dev/null
  "$BUILD/client/model-client" --target "$target" bench --model tiny --shape 3,32,32 \
    --concurrency 16,64 --duration "$DURATION" --warmup "$WARMUP" --json "$work/$name-tiny.json" > /dev/null
  kill "$server_pid"; wait "$server_pid" || true; server_pid=""
}

run sandboxed-1
run trusted-1 --trust_torchscript
run sandboxed-2
run trusted-2 --trust_torchscript

out="bench/results/sandbox-server-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$out" "$DURATION" "$WARMUP" <<'PY'
import datetime, json, os, re, subprocess, sys
work, out, duration, warmup = sys.argv[1:]
def levels(name, model):
    j = json.load(open(os.path.join(work, f'{name}-{model}.json')))
    return {lv['concurrency']: lv for lv in (j['levels'] if 'levels' in j else j)}
def load_ms(name, model):
    m = re.search(rf'model {model}: version 1 .* in (\d+) ms', open(os.path.join(work, name + '.log')).read())
    return int(m.group(1)) if m else float('nan')
cpu = subprocess.run(['sh', '-c', "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
rows = []
for model, c in (('vgg16ts', 16), ('tiny', 16), ('tiny', 64)):
    for run in ('1', '2'):
        s, t = levels('sandboxed-' + run, model)[c], levels('trusted-' + run, model)[c]
        extra = ''
        if model == 'tiny':  # the transport's cost per request, in microseconds
            extra = f"{(1e6 / s['requests_per_second'] - 1e6 / t['requests_per_second']) * c:.0f}"
        rows.append(f"| {model} | {c} | {run} | {s['samples_per_second']:.2f} | {t['samples_per_second']:.2f} | "
                    f"{s['samples_per_second'] / t['samples_per_second']:.3f} | {s['p50_ms']:.2f} | "
                    f"{t['p50_ms']:.2f} | {extra} |")
loads = [f"| {m} | {run} | {load_ms('sandboxed-' + run, m)} | {load_ms('trusted-' + run, m)} |"
         for m in ('vgg16ts', 'tiny') for run in ('1', '2')]
with open(out, 'w') as f:
    f.write(f"""# The sandbox through the whole server: sandboxed (default) vs --trust_torchscript

- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}
- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian), OpenBLAS (openmp); no GPU
- command: `bash bench/sandbox_server_bench.sh` (server defaults: max batch 8, 2 batch workers,
  queue 256; one sandboxed worker process per model version with a channel per batch worker, so
  two passes run in it at once as in process; client and server on the same machine, loopback); the modes alternated: sandboxed, trusted,
  sandboxed, trusted
- per level: `model-client bench --duration {duration} --warmup {warmup}`, 1 sample per request;
  "extra us/request" = concurrency x (1/rate sandboxed - 1/rate trusted)

| model | concurrency | run | samples/s sandboxed | samples/s trusted | ratio | p50 ms sandboxed | p50 ms trusted | extra us/request |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
""" + "\n".join(rows) + """

Load time (the server's "ready in" log line: read, verify, load, warm up):

| model | run | sandboxed ms | trusted ms |
| --- | ---: | ---: | ---: |
""" + "\n".join(loads) + "\n")
print(open(out).read())
PY
