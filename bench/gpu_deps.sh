#!/usr/bin/env bash
# Downloads, here, the Debian 12 packages that bench/gpu_check.sh carries to the
# GPU machine (which has pip's torch and a compiler, but no gRPC, protobuf,
# abseil, ... and no network): development files and runtime libraries of gRPC,
# protobuf (protoc and grpc_cpp_plugin included), abseil, re2, c-ares,
# prometheus-cpp, Boost's headers (Beast), nlohmann-json, fp16, the image
# libraries, OpenSSL and zlib headers. Into .gpudeps/ (git-ignored; ~28 MB).
#   bash bench/gpu_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpudeps
cd .gpudeps
apt-get download -qq \
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 protobuf-compiler-grpc \
  libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32 \
  libabsl-dev libabsl20220623 libre2-dev libre2-9 libc-ares-dev libc-ares2 \
  prometheus-cpp-dev libprometheus-cpp-core1.0 civetweb libcivetweb-dev libcivetweb1 libcurl4-openssl-dev libcurl4 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 \
  nlohmann-json3-dev libfp16-dev libboost1.74-dev \
  libjpeg62-turbo-dev libjpeg62-turbo libspng-dev libspng0 libexif-dev libexif12 \
  libwebp-dev libwebp7 libwebpdemux2 libwebpmux3 libssl-dev zlib1g-dev libseccomp-dev libseccomp2 2>&1 | grep -v "unsandboxed" || true
echo "gpu_deps: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in .gpudeps/"
