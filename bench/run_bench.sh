#!/usr/bin/env bash
# VGG16 state dict: load time (file to ready) and batch-1 forward, C++ against
# Python on the same file, same thread count, one run. Writes
# bench/results/load_forward-<date>.md and prints it.
#
#   bash bench/run_bench.sh            (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-5}
work=bench/work
mkdir -p "$work" bench/results
file="$work/vgg16/1/model_weights.pth"
[ -f "$file" ] || /usr/bin/python3 scripts/make_demo_store.py "$work" >/dev/null
cpp=$("$BUILD/bench/load_forward_bench" "$work" vgg16 vgg16 "$THREADS" "$ITERS" 1)
py=$(/usr/bin/python3 bench/python_baseline.py "$file" vgg16 "$THREADS" "$ITERS" 1)
get() { echo "$cpp"$'\n'"$py" | /usr/bin/python3 -c "import json,sys; d={json.loads(l)['what']: json.loads(l)['ms'] for l in sys.stdin if l.strip()}; print(d['$1'])"; }
out="bench/results/load_forward-$(date -u +%Y-%m-%d).md"
{
  echo "# VGG16 state dict: load and batch-1 forward, C++ vs Python"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "- LibTorch / PyTorch: Debian 1.13.1 (same libtorch under both), BLAS: $(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu)"
  echo "- threads: $THREADS (intra-op, both sides); median of $ITERS runs, warm page cache"
  echo "- file: $(stat -c %s "$file") bytes (torch.save(torchvision.models.vgg16().state_dict()))"
  echo "- command: \`bash bench/run_bench.sh\`"
  echo
  echo "| what | C++ (ms) | Python (ms) |"
  echo "| --- | ---: | ---: |"
  echo "| read file to tensors + strict VGG16 build, CRC-32 checked | $(get cpp_load_crc) | |"
  echo "| same, CRC skipped (the store verified sha256 instead) | $(get cpp_load_nocrc) | |"
  echo "| sha256 of the file alone | $(get cpp_sha256) | |"
  echo "| **server load from the store** (resolve, sha256 beside the read, strict build, swap in) | **$(get cpp_store_load)** | |"
  echo "| \`torch.load(f)\` alone | | $(get py_torch_load) |"
  echo "| \`torch.load\` + \`vgg16().load_state_dict\` (file to ready) | | $(get py_load_state_dict) |"
  echo "| forward, batch 1, 224x224, eval | $(get cpp_forward_b1) | $(get py_forward_b1) |"
} > "$out"
cat "$out"
