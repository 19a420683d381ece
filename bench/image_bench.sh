#!/usr/bin/env bash
# Images in Predict vs float tensors, VGG16 on the same server in one run: one
# sample per request at concurrency 16 -- a 3x224x224 float32 tensor, a JPEG photo
# (skimage's chelsea, 451x300, re-encoded by PIL) and a larger one (astronaut,
# 512x512) -- plus the preprocessing share: modelserver_preprocess_duration_seconds
# (decode + resize + crop + normalise per image, from /metrics) against the time per
# image the server spends. Writes bench/results/images-<date>.md and prints it.
#
#   bash bench/image_bench.sh      (after `make build`; ~2 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
source bench/serve_vgg16.sh  # BUILD, work, demo_store, serve_vgg16
demo_store
/usr/bin/python3 - "$work" <<'PY'
import os, sys, skimage.data
from PIL import Image
d = os.path.dirname(skimage.data.__file__)
for n in ('chelsea', 'astronaut'):
    Image.open(os.path.join(d, n + '.png')).convert('RGB').save(os.path.join(sys.argv[1], n + '.jpg'), quality=90)
PY
server_pid=""
trap '[ -n "$server_pid" ] && kill $server_pid 2>/dev/null || true' EXIT
rm -f "$work/metrics_port"
serve_vgg16 "$work" "$work/server-images.log" --metrics_listen 127.0.0.1:0 \
  --metrics_port_file "$work/metrics_port"
client="$BUILD/client/model-client --target $target"
$client bench --model vgg16 --shape 3,224,224 --concurrency 16 --duration "$DURATION" --warmup 3s \
  --json "$work/image-tensor.json" > /dev/null
for n in chelsea astronaut; do
  curl -s "http://127.0.0.1:$(cat "$work/metrics_port")/metrics" > "$work/metrics-before-$n.txt"
  $client bench --model vgg16 --image "$work/$n.jpg" --concurrency 16 --duration "$DURATION" \
    --warmup 3s --json "$work/image-$n.json" > /dev/null
  curl -s "http://127.0.0.1:$(cat "$work/metrics_port")/metrics" > "$work/metrics-after-$n.txt"
done
out="bench/results/images-$(date -u +%Y-%m-%d).md"
/usr/bin/python3 - "$work" "$DURATION" > "$out" <<'PY'
import json, os, sys, datetime
from prometheus_client.parser import text_string_to_metric_families
work, duration = sys.argv[1:]
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]

def pre(path):  # (sum, count) of the preprocess histogram for vgg16
    s = c = 0.0
    for fam in text_string_to_metric_families(open(path).read()):
        if fam.name == "modelserver_preprocess_duration_seconds":
            for x in fam.samples:
                if x.labels.get("model") == "vgg16":
                    if x.name.endswith("_sum"): s = x.value
                    if x.name.endswith("_count"): c = x.value
    return s, c

print("# Images (PredictRequest.images) vs float tensors, VGG16 on CPU\n")
print(f"- date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}")
print(f"- machine: {os.cpu_count()} cores, {cpu}; Debian 12, LibTorch 1.13.1 (Debian)")
print(f"- command: `bash bench/image_bench.sh` (`model-client bench --concurrency 16 --duration {duration}`, "
      "one sample per request, server defaults: fp32 channels-last, preprocess threads = cores)\n")
print("| input | bytes/request | samples/s | p50 ms | p99 ms | preprocess ms/image (mean) | preprocess share of server time per image |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
t = json.load(open(f"{work}/image-tensor.json"))[0]
print(f"| float32 tensor 3x224x224 | {3*224*224*4} | {t['samples_per_second']:.2f} | {t['p50_ms']:.0f} | {t['p99_ms']:.0f} | - | - |")
for n, size in (("chelsea", "451x300"), ("astronaut", "512x512")):
    r = json.load(open(f"{work}/image-{n}.json"))[0]
    s0, c0 = pre(f"{work}/metrics-before-{n}.txt")
    s1, c1 = pre(f"{work}/metrics-after-{n}.txt")
    ms = 1000 * (s1 - s0) / max(1, c1 - c0)
    per_image = 1000 * 2 / r["samples_per_second"]  # 2 cores busy: core-ms per image
    nbytes = os.path.getsize(f"{work}/{n}.jpg")
    print(f"| JPEG {n} {size} | {nbytes} | {r['samples_per_second']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {ms:.2f} | {100 * ms / per_image:.1f}% |")
print("\nThe share is preprocess core-time per image over the core-time per image at that "
      "throughput (2 cores x 1 / samples/s); warm-up requests are counted in the histogram too.")
PY
cat "$out"
