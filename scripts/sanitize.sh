#!/usr/bin/env bash
# Sanitizer builds of the tree (run by .ci/run after `make test`):
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer, every test: the unit tests
#         and the integration suites, whose servers are then the sanitized binary
#   tsan  ThreadSanitizer over the concurrent parts' tests (see below)
# Each in its own build folder (build-asan, build-tsan), with its own fixtures.
#   bash scripts/sanitize.sh [asan|tsan|all]      (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
what=${1:-all}
base="-O1 -g -fno-omit-frame-pointer"

configure() {  # DIR FLAGS
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$base $2" \
    -DCMAKE_EXE_LINKER_FLAGS="$2" -DCMAKE_SHARED_LINKER_FLAGS="$2" >/dev/null
}

if [ "$what" = asan ] || [ "$what" = all ]; then
  # vptr checks would flag LibTorch's own (uninstrumented) classes; leaks are not
  # checked (LibTorch and protobuf keep process-lifetime allocations).
  flags="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined"
  configure build-asan "$flags"
  cmake --build build-asan -j"$JOBS"
  (cd build-asan &&
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest -j"$JOBS" --output-on-failure --timeout 1500) 2>&1 | tee build-asan/ctest.log |
    grep -E "^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|ERROR: AddressSanitizer|runtime error"
  grep -q "100% tests passed" build-asan/ctest.log
  echo "asan+ubsan: every test passed"
fi
