# Sourced by the benchmark scripts (from the repository root): sets BUILD (default
# build) and work=bench/work, and defines demo_store and serve_vgg16.
# serve_vgg16 STORE LOG [SERVER FLAGS...] starts model-server ($BUILD) on a free loopback port serving STORE's vgg16, waits until
# it is READY, and sets server_pid and target; the caller kills server_pid.
serve_vgg16() {
  local store=$1 log=$2
  shift 2
  rm -f "$store/port"
  "$BUILD/server/model-server" --store "$store" --model vgg16=vgg16 --listen 127.0.0.1:0 \
    --port_file "$store/port" --metrics_listen '' --http_listen '' "$@" > "$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$store/port" ] && break; sleep 0.1; done
  target="127.0.0.1:$(cat "$store/port")"
  for _ in $(seq 600); do
    "$BUILD/client/model-client" --target "$target" status vgg16 2>/dev/null | grep -q READY && break
    sleep 0.1
  done
}

BUILD=${BUILD:-build}
work=bench/work
mkdir -p "$work" bench/results
# demo_store: writes the demo store's vgg16 into $work once.
demo_store() {
  [ -f "$work/vgg16/1/model_weights.pth" ] || /usr/bin/python3 scripts/make_demo_store.py "$work" >/dev/null
}
