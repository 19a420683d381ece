#!/usr/bin/env bash
# Builds the fuzz targets with clang (libFuzzer + AddressSanitizer +
# UndefinedBehaviorSanitizer) and runs them on a seed corpus made from the test
# fixtures (whole .pth/.pt files and their data.pkl records):
#   fuzz/checkpoint_fuzzer.cc  server/checkpoint/ (torch-free) and the .npy reader, SECONDS
#   fuzz/torch_fuzzer.cc       tensor materializer + layer-stack builder (LibTorch),
#                              TORCH_SECONDS (default SECONDS / 3)
#   fuzz/image_fuzzer.cc       image decoders (libjpeg-turbo, libspng, libwebp, libexif),
#                              IMAGE_SECONDS (default SECONDS / 3), seeded with small
#                              JPEG/PNG/WebP files PIL writes here
#   fuzz/wire_fuzzer.cc        network input: the REST inference body, the Open
#                              Inference conversions both ways, Predict's tensor, the
#                              REST routes, a sandboxed worker's reply; WIRE_SECONDS (default SECONDS / 2), seeded
#                              by fuzz/wire_seeds.py with what the tests send
#
#   bash fuzz/run_fuzzer.sh [SECONDS [TORCH_SECONDS [IMAGE_SECONDS [WIRE_SECONDS]]]]
#   (default 300; needs `make test` fixtures). FUZZ_PHASE=build only builds the targets
#   (CI does that beside the Debian 13 run), FUZZ_PHASE=run only runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-300}
TORCH_SECONDS=${2:-$((SECONDS_TO_RUN / 3))}
IMAGE_SECONDS=${3:-$((SECONDS_TO_RUN / 3))}
WIRE_SECONDS=${4:-$((SECONDS_TO_RUN / 2))}
out=build/fuzz
mkdir -p "$out/corpus" "$out/crashes"
command -v clang++ >/dev/null || { echo "clang++ is not installed (apt-get install clang libclang-rt-14-dev)"; exit 1; }
[ -d build/proto ] || { echo "run make build first"; exit 1; }
phase=${FUZZ_PHASE:-all}  # build: only build the targets; run: only run those built before
case "$phase" in build|run|all) ;; *) echo "FUZZ_PHASE is build, run or unset, not '$phase'"; exit 1 ;; esac
if [ "$phase" != run ]; then
srcs="fuzz/checkpoint_fuzzer.cc $(ls server/checkpoint/*.cc) server/util/logging.cc
      common/host_tensor.cc common/npy.cc common/sha256.cc common/wire_size.cc"
absl_libs=$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format absl_time absl_synchronization)
flags="-std=c++17 -g1 -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
clang++ $flags -I. $srcs -o "$out/checkpoint_fuzzer" $absl_libs -lz -lcrypto
torch_srcs="fuzz/torch_fuzzer.cc server/model/tensor_materializer.cc server/model/layer_stack_model.cc
            server/model/torch_model.cc server/model/tensor_convert.cc server/model/precision.cc
            $(ls server/checkpoint/*.cc | grep -v checkpoint_check) server/util/logging.cc
            common/host_tensor.cc common/sha256.cc common/wire_size.cc"
# LibTorch itself is not instrumented; vptr checks would flag its own classes.
clang++ $flags -fno-sanitize=vptr -D_GLIBCXX_USE_CXX11_ABI=1 -I. \
  -isystem /usr/include/torch/csrc/api/include $torch_srcs -o "$out/torch_fuzzer" \
  $absl_libs -lz -lcrypto -ltorch -ltorch_cpu -lc10
clang++ $flags -I. fuzz/image_fuzzer.cc server/image/image_decode.cc -o "$out/image_fuzzer" \
  $absl_libs $(pkg-config --libs libjpeg spng libexif libwebp 2>/dev/null || echo -ljpeg -lspng -lexif -lwebp)
# The wire target: generated protobuf code from the build, no gRPC, no torch.
wire_srcs="fuzz/wire_fuzzer.cc server/service/rest_infer.cc server/service/oip_convert.cc
           server/service/shared_memory_regions.cc server/service/tensor_proto.cc server/metrics/http_router.cc common/host_tensor.cc
           common/dtype_convert.cc common/oip_datatype.cc common/wire_size.cc
           server/sandbox/worker_protocol.cc build/proto/inference/v2/grpc_predict_v2.pb.cc build/proto/modelserving/v1/model_service.pb.cc"
clang++ $flags -I. -Ibuild/proto $wire_srcs -o "$out/wire_fuzzer" $absl_libs \
  $(pkg-config --libs protobuf) -lcrypto
fi
[ "$phase" = build ] && { echo "fuzz targets built in $out"; exit 0; }
for t in checkpoint torch image wire; do
  [ -x "$out/${t}_fuzzer" ] || { echo "no $out/${t}_fuzzer: build it (FUZZ_PHASE=build)"; exit 1; }
done
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
# Calibration samples as numpy writes them (format 1.0 and 2.0, float32 and another dtype).
/usr/bin/python3 - "$out/corpus" <<'PY'
import io, sys, numpy as np
from numpy.lib import format as npf
out = sys.argv[1]
np.save(f'{out}/seed_calibration.npy', np.random.rand(2, 3, 4, 4).astype(np.float32))
np.save(f'{out}/seed_int64.npy', np.arange(6, dtype=np.int64).reshape(2, 3))
b = io.BytesIO()
npf.write_array(b, np.ones((1, 2), np.float32), version=(2, 0))
open(f'{out}/seed_v2.npy', 'wb').write(b.getvalue())
PY
# torch.export programs (both layouts, the hostile ones but the 18 MB graph) and
# their JSON records.
for f in $(find build/fixtures/export -name '*.pt2' -size -2M); do
  cp "$f" "$out/corpus/$(echo "$f" | tr '/' '_')"
  /usr/bin/python3 - "$f" "$out/corpus" <<'PY'
import sys, zipfile, os
path, out = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(path)
for n in z.namelist():
    if n.endswith(".json"):
        open(os.path.join(out, path.replace("/", "_") + "_" + n.replace("/", "_")), "wb").write(z.read(n))
PY
done

echo "corpus: $(ls "$out/corpus" | wc -l) files"
mkdir -p "$out/corpus_torch"
cp -n "$out"/corpus/* "$out/corpus_torch/" 2>/dev/null || true
"$out/checkpoint_fuzzer" "$out/corpus" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 \
  -artifact_prefix="$out/crashes/" -print_final_stats=1
# The torch target allocates tensors: cap each input's memory.
"$out/torch_fuzzer" "$out/corpus_torch" -max_total_time="$TORCH_SECONDS" -max_len=65536 \
  -rss_limit_mb=4096 -malloc_limit_mb=1024 -artifact_prefix="$out/crashes/torch-" \
  -print_final_stats=1
# Image seeds: small photos in every encoding and mode the decoders handle.
mkdir -p "$out/corpus_image"
/usr/bin/python3 - "$out/corpus_image" <<'PY'
import io, os, sys
import skimage.data
from PIL import Image
out = sys.argv[1]
d = os.path.dirname(skimage.data.__file__)
im = Image.open(os.path.join(d, 'chelsea.png')).convert('RGB').resize((48, 32))
exif = Image.Exif()
exif[0x0112] = 6
variants = {
    'base.jpg': (im, dict(format='JPEG', quality=80)),
    'progressive.jpg': (im, dict(format='JPEG', progressive=True)),
    'gray.jpg': (im.convert('L'), dict(format='JPEG')),
    'exif.jpg': (im, dict(format='JPEG', exif=exif)),
    'rgb.png': (im, dict(format='PNG')),
    'gray.png': (im.convert('L'), dict(format='PNG')),
    'palette.png': (im.convert('P'), dict(format='PNG')),
    'rgba.png': (im.convert('RGBA'), dict(format='PNG')),
    'gray16.png': (im.convert('L').convert('I').point(lambda v: v * 256).convert('I;16'), dict(format='PNG')),
    'exif.png': (im, dict(format='PNG', exif=exif)),
    'lossy.webp': (im, dict(format='WEBP', quality=70)),
    'lossless.webp': (im, dict(format='WEBP', lossless=True)),
}
for name, (img, kw) in variants.items():
    b = io.BytesIO()
    img.save(b, **kw)
    open(os.path.join(out, name), 'wb').write(b.getvalue())
PY
"$out/image_fuzzer" "$out/corpus_image" -max_total_time="$IMAGE_SECONDS" -max_len=65536 \
  -rss_limit_mb=2048 -malloc_limit_mb=512 -artifact_prefix="$out/crashes/image-" \
  -print_final_stats=1
# Network input, seeded with what the tests send.
/usr/bin/python3 fuzz/wire_seeds.py "$out/corpus_wire" build
"$out/wire_fuzzer" "$out/corpus_wire" -max_total_time="$WIRE_SECONDS" -max_len=65536 \
  -rss_limit_mb=2048 -malloc_limit_mb=512 -artifact_prefix="$out/crashes/wire-" \
  -print_final_stats=1
