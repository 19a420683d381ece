#!/usr/bin/env bash
# The precision modes on a GPU (issue 14), for a lent GPU machine; about 5 minutes.
# Builds the model and batching libraries with bench/precision_bench against the
# machine's own LibTorch (pip's torch, CUDA), makes a random-weight VGG16 (and a
# well-separated-logits variant) with Python, then prints, per mode (fp32 NCHW,
# fp32 channels-last, fp16 and bf16 channels-last): Python eager samples/s at
# batch 32, raw LibTorch samples/s at batch 32, served samples/s (the server's
# batching queue and host<->device path, no gRPC: 2 clients x 32 samples and 64
# clients x 1 sample, batches up to 32, 2 workers on their own CUDA streams), and
# the accuracy against Python's float32 outputs on 64 inputs.
#
#   bash bench/gpu_check.sh [OUT_DIR]     (OUT_DIR default $OUT or /tmp/gpu_check)
#
# Build dependencies missing there (absl, fp16.h, OpenSSL and zlib headers) come
# as Debian 12 packages in .gpudeps/ (`apt-get download libabsl-dev
# libabsl20220623 libfp16-dev libssl-dev zlib1g-dev` in .gpudeps/ beforehand);
# their runtime libraries are the machine's own.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_check}}
PY=${PYTHON:-python3}
SECONDS_PER=${SECONDS_PER:-5}
mkdir -p "$OUT_DIR"
log() { echo "[gpu_check $(date -u +%T)] $*"; }
START=$(date +%s)

log "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "cxx11 ABI", torch.compiled_with_cxx11_abi())'
nproc; c++ --version | head -1; cmake --version | head -1

DEPS=/tmp/gpu_deps
mkdir -p $DEPS
for f in .gpudeps/*.deb; do [ -f "$f" ] && dpkg -x "$f" $DEPS; done
so() { ldconfig -p | awk -v n="$1" '$1 == n {print $NF; exit}'; }
TORCH_CMAKE=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "configure (LibTorch from $TORCH_CMAKE)"
cmake -S bench/gpu -B /tmp/build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$DEPS/usr" \
  -DCMAKE_CXX_FLAGS="-isystem $DEPS/usr/include -isystem $DEPS/usr/include/x86_64-linux-gnu" \
  -DOPENSSL_INCLUDE_DIR=$DEPS/usr/include -DOPENSSL_CRYPTO_LIBRARY="$(so libcrypto.so.3)" \
  -DOPENSSL_SSL_LIBRARY="$(so libssl.so.3)" \
  -DZLIB_INCLUDE_DIR=$DEPS/usr/include -DZLIB_LIBRARY="$(so libz.so.1)" \
  > "$OUT_DIR/cmake.log" 2>&1 || { tail -40 "$OUT_DIR/cmake.log"; exit 1; }
grep -i "cuda\|torch" "$OUT_DIR/cmake.log" | head -5
log "build"
if ! ninja -C /tmp/build-gpu -j"$(nproc)" precision_bench > "$OUT_DIR/build.log" 2>&1; then
  grep -B2 -A12 "error" "$OUT_DIR/build.log" | head -60
  log "build failed; again without the CUDA allocator statistics"
  cmake -DMODELSERVER_CUDA_STATS=OFF /tmp/build-gpu > /dev/null
  ninja -C /tmp/build-gpu -j"$(nproc)" precision_bench > "$OUT_DIR/build2.log" 2>&1 \
    || { grep -B2 -A12 "error" "$OUT_DIR/build2.log" | head -80; exit 1; }
fi
log "built in $(( $(date +%s) - START )) s"

W=/tmp/gpu_work
log "Python: fixtures and eager timings"
$PY bench/precision_python.py $W cuda 32 "$SECONDS_PER" 0 | tee "$OUT_DIR/python.jsonl"
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
MODES=fp32:contiguous,fp32:channels_last,fp16:channels_last,bf16:channels_last
log "C++: load, accuracy, raw and served per mode"
/tmp/build-gpu/precision_bench file=$W/vgg16/1/model_weights.pth arch=vgg16 device=cuda:0 \
  modes=$MODES inputs=$W/inputs.npy reference=$W/vgg16_ref.npy batch=32 \
  seconds="$SECONDS_PER" concurrency=2,64 request_batch=32,1 workers=2 \
  | tee "$OUT_DIR/cpp.jsonl"
log "C++: accuracy on the well-separated variant"
/tmp/build-gpu/precision_bench file=$W/vgg16_sep/1/model_weights.pth arch=vgg16 device=cuda:0 \
  modes=$MODES inputs=$W/inputs.npy reference=$W/vgg16_sep_ref.npy batch=32 raw=0 concurrency= \
  | sed 's/"mode": "/"mode": "sep:/' | tee "$OUT_DIR/cpp_sep.jsonl"
log "report"
$PY bench/precision_report.py "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" \
  "$OUT_DIR/python.jsonl" "$OUT_DIR/cpp.jsonl" "$OUT_DIR/cpp_sep.jsonl" | tee "$OUT_DIR/report.md"
log "done in $(( $(date +%s) - START )) s"
