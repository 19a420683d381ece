#!/usr/bin/env bash
# Sanitizer builds of the tree (run by .ci/run after `make test`):
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer, every test: the unit tests
#         and the integration suites, whose servers are then the sanitized binary
#   tsan  ThreadSanitizer over the concurrent parts' tests (see below)
# Each in its own build folder (build-asan, build-tsan; SANITIZE_BUILD=build-debian13
# makes them build-debian13-asan, ...), with its own fixtures; warnings are not errors
# there (GCC 12 flags std::regex under the sanitizers).
#   bash scripts/sanitize.sh [asan|tsan|all]      (default all)
# TSAN_PHASE=build only builds the TSan tests (CI runs it niced beside `make test`'s
# tests, whose CPU is partly idle), TSAN_PHASE=run only runs what was built; unset: both.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
tsan_phase=${TSAN_PHASE:-all}
case "$tsan_phase" in build|run|all) ;; *) echo "TSAN_PHASE is build, run or unset, not '$tsan_phase'"; exit 1 ;; esac
what=${1:-all}
asan_dir=${SANITIZE_BUILD:-build}-asan
tsan_dir=${SANITIZE_BUILD:-build}-tsan
base="-O1 -g1 -fno-omit-frame-pointer"  # line tables: reports keep files and lines

# On a failure: each failed test's last output lines (ctest --output-on-failure wrote
# them after its result line), prefixed so that .ci/run's filter keeps them.
failures() {  # LOG PREFIX
  awk -v p="$2" '
    /^ *[0-9]+\/[0-9]+ Test +#/ { show = ($0 ~ /\*\*\*|Not Run/); n = 0; if (show) print p ": " $0; next }
    /^ *Start +[0-9]+:/ { show = 0; next }
    show && n < 120 { print p ": | " $0; n++ }' "$1"
  df -h . | sed "s/^/$2: /"
}

configure() {  # DIR FLAGS
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$base $2" \
    -DCMAKE_EXE_LINKER_FLAGS="$2" -DCMAKE_SHARED_LINKER_FLAGS="$2" -DMODELSERVER_WERROR=OFF >/dev/null
}

if [ "$what" = asan ] || [ "$what" = all ]; then
  # vptr checks would flag LibTorch's own (uninstrumented) classes; leaks are not
  # checked (LibTorch and protobuf keep process-lifetime allocations); the tests'
  # LD_PRELOAD shims (slow or rename-less file systems) load after the runtime;
  # MODELSERVER_SANITIZER tells the tests that RSS includes ASan's shadow and
  # quarantine, so their memory bounds are checked by the plain build only.
  flags="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined"
  configure "$asan_dir" "$flags"
  cmake --build "$asan_dir" -j"$JOBS"
  (cd "$asan_dir" &&
    MODELSERVER_SANITIZER=asan \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:verify_asan_link_order=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest -j"$JOBS" --output-on-failure --timeout 1500) 2>&1 | tee "$asan_dir"/ctest.log |
    grep -E "^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|ERROR: AddressSanitizer|runtime error" || true
  grep -q "100% tests passed" "$asan_dir"/ctest.log || { failures "$asan_dir"/ctest.log asan; exit 1; }
  echo "asan+ubsan: every test passed"
fi

if [ "$what" = tsan ] || [ "$what" = all ]; then
  # ThreadSanitizer sees only instrumented synchronisation, and absl::Mutex lives in
  # Debian's (uninstrumented) libabsl: every guarded member would look racy. So
  # abseil is built here from Debian's own source package (same version, same
  # patches and options.h, so the same ABI and inline namespace) with TSan, and
  # linked statically into the TSan tests ahead of the shared one.
  absl_prefix="$PWD/$tsan_dir/absl"
  if [ ! -f "$absl_prefix/lib/cmake/absl/abslConfig.cmake" ]; then
    src=$tsan_dir/absl-src
    rm -rf "$src" && mkdir -p "$src/parts" "$src/lists/partial"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      > "$src/parts/src.sources"
    apt=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$PWD/$src/parts"
         -o Dir::State::Lists="$PWD/$src/lists")
    apt-get "${apt[@]}" update -qq
    (cd "$src" && apt-get "${apt[@]}" source --download-only -qq "abseil=$(dpkg-query -W -f='${Version}' libabsl-dev)" 2>/dev/null &&
      dpkg-source -x abseil_*.dsc tree >/dev/null)
    diff -q "$src/tree/absl/base/options.h" /usr/include/absl/base/options.h
    cmake -S "$src/tree" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_CXX_FLAGS="$base -fsanitize=thread" -DCMAKE_CXX_STANDARD=17 -DABSL_PROPAGATE_CXX_STD=ON \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$absl_prefix" >/dev/null
    cmake --build "$src/build" -j"$JOBS" >/dev/null
    cmake --install "$src/build" >/dev/null
  fi
  cmake -S . -B "$tsan_dir" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$base -fsanitize=thread" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DMODELSERVER_WERROR=OFF \
    -Dabsl_DIR="$absl_prefix/lib/cmake/absl" >/dev/null
  # The concurrent parts: the batching queue and its workers, the registry (loads,
  # hot swaps, polling), the store (publish races), the HTTP endpoint (event thread
  # and handler pools), the service's shared memory regions (unregistered while
  # read), the util helpers.
  tests="batching_test serving_test store_test metrics_test service_test util_test"
  cmake --build "$tsan_dir" -j"$JOBS" --target $tests
  if [ "$tsan_phase" = build ]; then echo "tsan: $tests built"; exit 0; fi
  (cd "$tsan_dir" && TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/../scripts/tsan.supp" \
    ctest -j"$JOBS" --output-on-failure --timeout 1500 -R "^($(echo $tests | tr ' ' '|'))\$") 2>&1 |
    tee "$tsan_dir"/ctest.log | grep -E "^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|WARNING: ThreadSanitizer" || true
  grep -q "100% tests passed" "$tsan_dir"/ctest.log || { failures "$tsan_dir"/ctest.log tsan; exit 1; }
  echo "tsan: $tests passed"
fi
