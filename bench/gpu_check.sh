#!/usr/bin/env bash
# The whole server on a GPU machine, measured through gRPC (issue 26); about 8
# minutes there. The machine has pip's torch (CUDA), a compiler, CMake and Ninja,
# but no gRPC, protobuf, abseil, ... and no network: those come as the Debian 12
# packages bench/gpu_deps.sh puts in .gpudeps/ (carry it), unpacked here with
# dpkg -x into a prefix that CMake, pkg-config and the loader are pointed at.
#
#   bash bench/gpu_deps.sh                      (here, once: .gpudeps/, ~28 MB)
#   bash bench/gpu_check.sh [OUT_DIR]           (there; OUT_DIR default $OUT or /tmp/gpu_check)
#   DRY_RUN=1 bash bench/gpu_check.sh [OUT_DIR] (here: the same steps against Debian's
#                                                LibTorch on the CPU, short runs)
#
# Steps: unpack the packages; configure the top-level project against the
# machine's LibTorch (torch.utils.cmake_prefix_path) and the prefix (tests off);
# build model-server, model-client and precision_bench; check with ldd that
# nothing is missing; Python writes a random-weight VGG16 store and times eager
# mode at batch 32; precision_bench times raw LibTorch at batch 32 per mode; then
# per mode (fp32 NCHW, fp32/fp16/bf16 channels-last) the real server (batches up
# to 32, 2 workers) under `model-client bench`: 1 sample per request at
# concurrency 1, 16 and 64, and 32 samples per request at concurrency 4, each
# level's mean batch size from /metrics; bench/gpu_report.py writes the tables.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
mkdir -p "$OUT_DIR"
log() { echo "[gpu_check $(date -u +%T)] $*"; }
START=$(date +%s)
if [ "$DRY_RUN" = 1 ]; then
  PY=/usr/bin/python3
  DEVICE=cpu
  SECONDS_PER=${SECONDS_PER:-3}
  MODES=${MODES:-fp32:channels_last}
  TORCH_CMAKE=/usr/lib/x86_64-linux-gnu/cmake/Torch
  BUILD_DIR=${BUILD_DIR:-/tmp/build-gpu-dry}
else
  DEVICE=cuda:0
  SECONDS_PER=${SECONDS_PER:-5}
  MODES=${MODES:-fp32:contiguous,fp32:channels_last,fp16:channels_last,bf16:channels_last}
  TORCH_CMAKE=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
  BUILD_DIR=${BUILD_DIR:-/tmp/build-gpu}
fi

log "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "cxx11 ABI", torch.compiled_with_cxx11_abi())'
nproc; c++ --version | head -1; cmake --version | head -1

DEPS=/tmp/gpu_deps
rm -rf $DEPS && mkdir -p $DEPS
n=0
for f in .gpudeps/*.deb; do [ -f "$f" ] && dpkg -x "$f" $DEPS && n=$((n + 1)); done
[ "$n" -gt 0 ] || { echo "no .gpudeps/*.deb: run bench/gpu_deps.sh here and carry .gpudeps"; exit 1; }
log "unpacked $n packages into $DEPS ($(du -sh $DEPS | cut -f1))"
LIB=$DEPS/usr/lib/x86_64-linux-gnu
# Their pkg-config files and CMake configs name /usr: read them under the prefix.
export PKG_CONFIG_SYSROOT_DIR=$DEPS
export PKG_CONFIG_LIBDIR=$LIB/pkgconfig:$DEPS/usr/share/pkgconfig
export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}  # protoc at build time, the server later
so() { ldconfig -p | awk -v n="$1" '$1 == n {print $NF; exit}'; }

log "configure (LibTorch from $TORCH_CMAKE)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELSERVER_BUILD_TESTS=OFF \
  -DMODELSERVER_WERROR=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$DEPS/usr;$LIB/cmake;$DEPS/usr/share/cmake" \
  -DCMAKE_CXX_FLAGS="-isystem $DEPS/usr/include -isystem $DEPS/usr/include/x86_64-linux-gnu" \
  -Dabsl_DIR=$LIB/cmake/absl -DgRPC_DIR=$LIB/cmake/grpc \
  -Dprometheus-cpp_DIR=$LIB/cmake/prometheus-cpp -Dnlohmann_json_DIR=$DEPS/usr/share/cmake/nlohmann_json \
  -DBoost_DIR=$LIB/cmake/Boost-1.74.0 -DBoost_INCLUDE_DIR=$DEPS/usr/include \
  -Dc-ares_DIR=$LIB/cmake/c-ares -Dcivetweb_DIR=$LIB/cmake/civetweb \
  -DProtobuf_INCLUDE_DIR=$DEPS/usr/include -DProtobuf_LIBRARY=$LIB/libprotobuf.so \
  -DProtobuf_PROTOC_EXECUTABLE=$DEPS/usr/bin/protoc -DGRPC_CPP_PLUGIN=$DEPS/usr/bin/grpc_cpp_plugin \
  -DJPEG_INCLUDE_DIR=$DEPS/usr/include -DJPEG_LIBRARY=$LIB/libjpeg.so \
  -DOPENSSL_INCLUDE_DIR=$DEPS/usr/include -DOPENSSL_CRYPTO_LIBRARY="$(so libcrypto.so.3)" \
  -DOPENSSL_SSL_LIBRARY="$(so libssl.so.3)" \
  -DZLIB_INCLUDE_DIR=$DEPS/usr/include -DZLIB_LIBRARY="$(so libz.so.1)" \
  -DCURL_INCLUDE_DIR=$DEPS/usr/include/x86_64-linux-gnu -DCURL_LIBRARY=$LIB/libcurl.so \
  > "$OUT_DIR/cmake.log" 2>&1 || { tail -40 "$OUT_DIR/cmake.log"; exit 1; }
# Where each dependency was found: the prefix, not the machine (the dry run's
# machine has them too).
grep -E "^(absl|gRPC|prometheus-cpp|Boost|nlohmann_json)_DIR|^Protobuf_(INCLUDE_DIR|LIBRARY|PROTOC_EXECUTABLE)|^GRPC_CPP_PLUGIN|^Torch_DIR" \
  "$BUILD_DIR/CMakeCache.txt" | grep -v ":INTERNAL=" | tee "$OUT_DIR/found.txt"
if grep -E "^(absl|gRPC|prometheus-cpp|Boost|nlohmann_json)_DIR|^Protobuf_|^GRPC_CPP" "$OUT_DIR/found.txt" |
   grep -v "$DEPS" | grep -q .; then
  log "a dependency was found outside $DEPS"; exit 1
fi
grep -i "holds protobuf headers" "$OUT_DIR/cmake.log" || true
log "build"
if ! ninja -C "$BUILD_DIR" -j"$(nproc)" model-server model-client precision_bench > "$OUT_DIR/build.log" 2>&1; then
  grep -B2 -A12 "error" "$OUT_DIR/build.log" | head -60
  log "build failed; again without the CUDA allocator statistics"
  cmake -DMODELSERVER_CUDA_STATS=OFF "$BUILD_DIR" > /dev/null
  ninja -C "$BUILD_DIR" -j"$(nproc)" model-server model-client precision_bench > "$OUT_DIR/build2.log" 2>&1 \
    || { grep -B2 -A12 "error" "$OUT_DIR/build2.log" | head -80; exit 1; }
fi
log "built in $(( $(date +%s) - START )) s"
SERVER=$BUILD_DIR/server/model-server
CLIENT=$BUILD_DIR/client/model-client
for b in "$SERVER" "$CLIENT"; do
  ldd "$b" > "$OUT_DIR/ldd-$(basename "$b").txt"
  if grep -q "not found" "$OUT_DIR/ldd-$(basename "$b").txt"; then
    grep "not found" "$OUT_DIR/ldd-$(basename "$b").txt"; log "$b: libraries missing"; exit 1
  fi
done
log "ldd: nothing missing; gRPC from $(grep -o "$LIB/libgrpc++.so[^ ]*" "$OUT_DIR/ldd-model-server.txt" | head -1)"

W=/tmp/gpu_work
log "Python: store and eager timings"
$PY bench/precision_python.py $W "$DEVICE" 32 "$SECONDS_PER" 0 | tee "$OUT_DIR/python.jsonl"
log "raw LibTorch at batch 32 per mode"
"$BUILD_DIR/bench/precision_bench" file=$W/vgg16/1/model_weights.pth arch=vgg16 device="$DEVICE" \
  modes="$MODES" inputs=$W/inputs.npy reference=$W/vgg16_ref.npy batch=32 \
  seconds="$SECONDS_PER" concurrency= | tee "$OUT_DIR/raw.jsonl"

server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null' EXIT
batch_stats() {  # "sum count" of modelserver_batch_size (Python: the GPU machine has no curl)
  $PY -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$(cat $W/mport)/metrics" 2>/dev/null |
    awk '/^modelserver_batch_size_sum/ {s=$2} /^modelserver_batch_size_count/ {c=$2} END {print s+0, c+0}'
}
: > "$OUT_DIR/served.jsonl"
for mode in ${MODES//,/ }; do
  precision=${mode%%:*}
  layout=${mode##*:}
  rm -f $W/port $W/mport
  "$SERVER" --store $W --model vgg16=vgg16 --device "$DEVICE" --precision "$precision" \
    --memory_format "$layout" --max_batch_size 32 --batch_workers 2 --max_queue_size 1024 \
    --listen 127.0.0.1:0 --port_file $W/port --metrics_listen 127.0.0.1:0 --metrics_port_file $W/mport \
    --http_listen '' > "$OUT_DIR/server-$precision-$layout.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1200); do [ -s $W/port ] && [ -s $W/mport ] && break; sleep 0.1; done
  target="127.0.0.1:$(cat $W/port)"
  for _ in $(seq 1200); do
    "$CLIENT" --target "$target" status vgg16 2>/dev/null | grep -q READY && break
    sleep 0.1
  done
  for level in 1x1 16x1 64x1 4x32; do
    c=${level%x*}
    per=${level#*x}
    before=$(batch_stats)
    "$CLIENT" --target "$target" bench vgg16 --shape 3,224,224 --batch "$per" --concurrency "$c" \
      --duration "${SECONDS_PER}s" --warmup 2s --json "$OUT_DIR/bench.json" > /dev/null 2>&1
    after=$(batch_stats)
    $PY - "$mode" "$c" "$per" "$before" "$after" "$OUT_DIR/bench.json" >> "$OUT_DIR/served.jsonl" <<'PY'
import json, sys
mode, c, per, before, after, path = sys.argv[1:]
(s0, n0), (s1, n1) = (map(float, before.split()), map(float, after.split()))
lv = json.load(open(path))[0]
print(json.dumps({"mode": mode, "concurrency": int(c), "request_batch": int(per),
                  "samples_per_s": lv["samples_per_second"], "p50_ms": lv["p50_ms"],
                  "p99_ms": lv["p99_ms"], "errors": lv["errors"],
                  "mean_batch": (s1 - s0) / max(1.0, n1 - n0)}))
PY
    tail -n 1 "$OUT_DIR/served.jsonl"
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null; server_pid=""
done
log "report"
machine=$(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo "CPU (dry run)")
$PY bench/gpu_report.py "$machine" "$OUT_DIR/python.jsonl" "$OUT_DIR/raw.jsonl" \
  "$OUT_DIR/served.jsonl" | tee "$OUT_DIR/report.md"
log "done in $(( $(date +%s) - START )) s"
