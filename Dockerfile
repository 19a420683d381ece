# syntax=docker/dockerfile:1
#
# model-server images.
#   CPU (default): docker build -t model-server:0.1.0 .
#   GPU:           docker build --target gpu --build-arg LIBTORCH_SHA256=<sha256 of the zip> \
#                    -t model-server:0.1.0-gpu .
# Note: the final `FROM cpu` makes the CPU image the default target.
# The CPU image is Debian 13 with its LibTorch 2.6. Its build stage installs exactly
# scripts/packages-debian13.txt through scripts/setup.sh (the list `make test-debian13`
# uses); the runtime stage installs scripts/runtime-packages.txt.

ARG DEBIAN_IMAGE=debian:13.8
ARG CUDA_IMAGE_TAG=12.4.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_TAG=12.4.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU build
FROM ${DEBIAN_IMAGE} AS build
COPY scripts/packages.txt scripts/packages-debian13.txt scripts/setup.sh /src/scripts/
RUN MODELSERVER_NO_TEST_TOOLS=1 bash /src/scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELSERVER_BUILD_TESTS=OFF \
    && cmake --build /build --target model-server model-worker model-client -j"$(nproc)"

# ---------------------------------------------------------------- CPU runtime
FROM ${DEBIAN_IMAGE}-slim AS cpu
COPY scripts/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       $(grep -v -E '^\s*(#|$)' /tmp/runtime-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin modelserver
COPY --from=build /build/server/model-server /build/server/model-worker /build/client/model-client /usr/local/bin/
USER 10001:10001
# gRPC, Prometheus metrics
EXPOSE 50051 8000 9090
ENTRYPOINT ["/usr/local/bin/model-server"]
CMD ["--store=/models", "--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9090"]

# ---------------------------------------------------------------- GPU build
# Official LibTorch (cxx11 ABI, CUDA 12.4) instead of Debian's CPU libtorch-dev, on
# NVIDIA's CUDA image. Ubuntu 24.04 ships the same gRPC 1.51, protobuf 3.21 and
# abseil 20220623 as Debian 12. Version pinned here; the archive's sha256 is a
# required build argument (the build stops without it, and on a mismatch).
FROM nvidia/cuda:${CUDA_IMAGE_TAG} AS gpu-build
ARG LIBTORCH_VERSION=2.4.1
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-${LIBTORCH_VERSION}%2Bcu124.zip
ARG LIBTORCH_SHA256
RUN test -n "${LIBTORCH_SHA256}" \
      || { echo "pass --build-arg LIBTORCH_SHA256=<sha256 of ${LIBTORCH_URL}>" >&2; exit 1; } \
    && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       build-essential cmake ninja-build pkg-config curl unzip ca-certificates \
       libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
       prometheus-cpp-dev libssl-dev zlib1g-dev nlohmann-json3-dev libboost-dev libfp16-dev \
       libjpeg-dev libspng-dev libexif-dev libwebp-dev libseccomp-dev \
    && curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
    && echo "${LIBTORCH_SHA256}  /tmp/libtorch.zip" | sha256sum -c - \
    && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMODELSERVER_BUILD_TESTS=OFF \
       -DCMAKE_PREFIX_PATH=/opt/libtorch \
    && cmake --build /build --target model-server model-worker model-client -j"$(nproc)"

# ---------------------------------------------------------------- GPU runtime
FROM nvidia/cuda:${CUDA_RUNTIME_TAG} AS gpu
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libgrpc++1.51t64 libprotobuf32t64 libabsl20220623t64 libprometheus-cpp-core1.0 \
       libjpeg-turbo8 libspng0 libexif12 libwebp7 \
       libssl3t64 zlib1g libgomp1 libseccomp2 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin modelserver
COPY --from=gpu-build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=gpu-build /build/server/model-server /build/server/model-worker /build/client/model-client /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 50051 8000 9090
ENTRYPOINT ["/usr/local/bin/model-server"]
CMD ["--store=/models", "--device=cuda", "--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9090"]

# The default target is the CPU image.
FROM cpu
