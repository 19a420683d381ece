#!/usr/bin/env bash
# `make image-test`: builds the CPU image from the Dockerfile without a Docker daemon
# (mmdebstrap makes the Debian 13 base, podman imports it under the names the
# Dockerfile uses, buildah builds with chroot isolation), then checks it from outside:
# the image's user is 10001 (not root), model-server starts from it as that user on a
# read-only store, and the host's tools get health (gRPC Health through `buf curl`,
# REST /v2/health/ready) and Predicts (a tensor and a JPEG) from it.
# Needs root (as CI runs); installs buildah, podman and mmdebstrap when missing.
# IMAGE_TEST_PHASE=build only builds the image (CI starts that in the background of the
# Debian 13 tests, whose CPU is a quarter idle); =check only checks an image built before;
# unset, both.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TAG=localhost/model-server:image-test
cache=${XDG_CACHE_HOME:-$HOME/.cache}/modelserver
fail() { echo "image-test FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (buildah with chroot isolation)"
[ -x "$BUILD/client/model-client" ] || fail "run make build first (the probes use $BUILD/client/model-client)"
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman mmdebstrap >/dev/null
fi

# The base image: the Dockerfile's Debian release (13, trixie) minbase, made once and
# cached.
mkdir -p "$cache"
debian=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' Dockerfile)
release=$(echo "$debian" | sed -n 's/^debian:\([0-9]*\).*/\1/p')
case "$release" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) fail "the Dockerfile's DEBIAN_IMAGE '$debian' is not Debian 12 or 13" ;;
esac
base="$cache/debian$release-minbase.tar"
[ -s "$base" ] || mmdebstrap --variant=minbase "$suite" "$base"
for tag in "docker.io/library/$debian" "docker.io/library/$debian-slim"; do
  podman image exists "$tag" || podman import -q "$base" "$tag" >/dev/null
done

phase=${IMAGE_TEST_PHASE:-all}
case "$phase" in build|check|all) ;; *) fail "IMAGE_TEST_PHASE is build, check or unset, not '$phase'" ;; esac
if [ "$phase" != check ]; then
  echo "building the CPU image ($TAG) ..."
  start=$SECONDS
  buildah bud --isolation chroot --layers --target cpu -t "$TAG" . > "$BUILD/image-build.log" 2>&1 \
    || { tail -n 30 "$BUILD/image-build.log"; fail "buildah bud (log: $BUILD/image-build.log)"; }
  echo "built in $((SECONDS - start)) s"
  [ "$phase" = all ] || exit 0
fi
podman image exists "$TAG" || fail "no image $TAG to check (IMAGE_TEST_PHASE=build makes it)"

user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$TAG")
[ "$user" = "10001:10001" ] || fail "the image runs as '$user', expected 10001:10001"
echo "ok   the image's user is $user"

# A read-only store with a small TorchScript model that takes images' [N, 3, 224, 224].
work=$(mktemp -d /tmp/image-test.XXXXXX)
ctr=""
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  pkill -u 10001 -f /usr/local/bin/model-server 2>/dev/null || true
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/store/pool/1"
# (a file, not stdin: torch.jit.script reads the module's source)
cat > "$work/make_store.py" <<'PY'
import os, sys, torch, skimage.data
from PIL import Image
class Pool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))
torch.jit.script(Pool()).save(os.path.join(sys.argv[1], 'store', 'pool', '1', 'model.pt'))
d = os.path.dirname(skimage.data.__file__)
Image.open(os.path.join(d, 'chelsea.png')).convert('RGB').save(os.path.join(sys.argv[1], 'cat.jpg'))
PY
/usr/bin/python3 "$work/make_store.py" "$work"
chmod -R a+rX "$work"
ports=$(/usr/bin/python3 -c 'import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r grpc_port http_port metrics_port <<< "$ports"

ctr=$(buildah from "$TAG")
buildah run --isolation chroot --user 10001:10001 -v "$work/store:/models:ro" "$ctr" -- \
  /usr/local/bin/model-server --store=/models --model=pool --state_dir=none \
  --listen=127.0.0.1:$grpc_port --http_listen=127.0.0.1:$http_port \
  --metrics_listen=127.0.0.1:$metrics_port > "$work/server.log" 2>&1 &
server=$!
client="$BUILD/client/model-client --target 127.0.0.1:$grpc_port"
for _ in $(seq 300); do
  $client status pool 2>/dev/null | grep -q READY && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; fail "the server exited"; }
  sleep 0.2
done
$client status pool | grep -q READY || { cat "$work/server.log"; fail "pool never READY"; }
echo "ok   model-server from the image serves a read-only store"
libtorch=$(grep -m1 -o "LibTorch [0-9.]*" "$work/server.log" || true)
[ "$release" != 13 ] || [ "${libtorch#LibTorch 2.6}" != "$libtorch" ] \
  || fail "the server in the Debian $release image reports '$libtorch', expected LibTorch 2.6"
echo "ok   the server in the Debian $release image reports $libtorch"

uid=$(ps -o uid= -C model-server | tr -d ' ' | sort -u)
[ "$uid" = 10001 ] || fail "model-server runs as uid '$uid', expected 10001"
echo "ok   model-server runs as uid $uid"

code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/v2/health/ready")
[ "$code" = 200 ] || fail "REST /v2/health/ready answered $code"
echo "ok   REST /v2/health/ready: 200"
buf=${MODELSERVER_BUF:-$cache/npm/node_modules/.bin/buf}
if [ -x "$buf" ]; then
  out=$("$buf" curl --protocol grpc --http2-prior-knowledge \
    "http://127.0.0.1:$grpc_port/grpc.health.v1.Health/Check" -d '{"service": ""}')
  echo "$out" | grep -q SERVING || fail "gRPC health: $out"
  echo "ok   gRPC Health/Check through buf curl: SERVING"
else
  fail "buf not found at $buf (scripts/setup.sh installs it)"
fi

out=$($client predict pool --shape 2,3,224,224 --top_k 0)
echo "$out" | grep -q "output \[2,3\]" || fail "tensor Predict: $out"
echo "ok   Predict with a tensor: $(echo "$out" | head -n 1)"
out=$($client predict pool --image "$work/cat.jpg" --top_k 0)
echo "$out" | grep -q "output \[1,3\]" || fail "image Predict: $out"
echo "ok   Predict with a JPEG (decoded in the image): $(echo "$out" | head -n 1)"

if $client upload pool --file "$work/store/pool/1/model.pt" --format TORCHSCRIPT 2>"$work/upload.err"; then
  fail "an upload into the read-only store succeeded"
fi
grep -q FAILED_PRECONDITION "$work/upload.err" || fail "upload into a read-only store: $(cat "$work/upload.err")"
echo "ok   the read-only store refuses an upload: $(tail -n 1 "$work/upload.err")"
echo "image-test passed"
