#!/usr/bin/env bash
# Builds fuzz/checkpoint_fuzzer with clang (libFuzzer + AddressSanitizer +
# UndefinedBehaviorSanitizer) and runs it on a seed corpus made from the test
# fixtures (whole .pth files and their data.pkl records).
#
#   bash fuzz/run_fuzzer.sh [SECONDS]      (default 300; needs `make test` fixtures in build/)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-300}
out=build/fuzz
mkdir -p "$out/corpus" "$out/crashes"
command -v clang++ >/dev/null || { echo "clang++ is not installed (apt-get install clang libclang-rt-14-dev)"; exit 1; }
[ -d build/proto ] || { echo "run make build first"; exit 1; }
srcs="fuzz/checkpoint_fuzzer.cc $(ls server/checkpoint/*.cc) server/util/logging.cc
      common/host_tensor.cc common/sha256.cc"
absl_libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format absl_time)
clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I. $srcs -o "$out/checkpoint_fuzzer" $absl_libs -lz -lcrypto
# Seed corpus: real torch.save / torch.jit.save files (the crafted attack fixtures
# included) and their pickles.
for f in $(find build/fixtures -name '*.pth' -size -2M -o -name '*.pt' -size -2M); do
  cp "$f" "$out/corpus/$(echo "$f" | tr '/' '_')"
  /usr/bin/python3 - "$f" "$out/corpus" <<'PY'
import sys, zipfile, os
path, out = sys.argv[1], sys.argv[2]
try:
    z = zipfile.ZipFile(path)
    for n in z.namelist():
        if n.endswith("data.pkl"):
            open(os.path.join(out, os.path.basename(os.path.dirname(path)) + "_" + n.replace("/", "_")), "wb").write(z.read(n))
except zipfile.BadZipFile:
    pass
PY
done
cp build/fixtures/reader/*.pkl build/fixtures/reader/*.zip "$out/corpus/" 2>/dev/null || true

echo "corpus: $(ls "$out/corpus" | wc -l) files"
"$out/checkpoint_fuzzer" "$out/corpus" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1
