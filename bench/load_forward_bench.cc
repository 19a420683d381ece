// Measures what a VGG state-dict checkpoint costs in C++: file to ready (reader,
// strict VGG build) and the eval-mode forward pass, for bench/run_bench.sh.
//
//   load_forward_bench STORE MODEL ARCH THREADS ITERS BATCHES [forward_only]
// (the file is STORE/MODEL/1/model_weights.pth; BATCHES like 1,2,4) prints one JSON
// object per line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "server/model/device.h"
#include "server/model/model_loader.h"
#include "server/serving/model_registry.h"
#include "server/store/checkpoint_store.h"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Ms(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: %s STORE MODEL ARCH THREADS ITERS BATCHES [forward_only]\n",
                 argv[0]);
    return 2;
  }
  const bool forward_only = argc == 8;
  const std::string root = argv[1];
  const std::string name = argv[2];
  const std::string file = root + "/" + name + "/1/model_weights.pth";
  const std::string arch = argv[3];
  const int threads = std::atoi(argv[4]);
  const int iters = std::atoi(argv[5]);
  std::vector<int> batches;
  for (const char* p = argv[6]; *p != '\0';) {
    batches.push_back(std::atoi(p));
    while (*p != '\0' && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  modelserver::SetIntraOpThreads(threads);

  modelserver::ModelLoadOptions o;
  o.path = file;
  o.architecture = arch;
  std::shared_ptr<const modelserver::Model> model;
  for (bool crc : {true, false}) {
    if (forward_only && crc) continue;
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      o.verify_crc = crc;
      model.reset();
      const auto start = std::chrono::steady_clock::now();
      auto m = modelserver::LoadModelFromFile(o);
      t.push_back(Ms(start));
      if (!m.ok()) {
        std::fprintf(stderr, "%s\n", m.status().ToString().c_str());
        return 1;
      }
      model = *m;
    }
    std::printf("{\"what\": \"cpp_load%s\", \"ms\": %.1f}\n", crc ? "_crc" : "_nocrc", Median(t));
  }
  if (!forward_only) {
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto sha = modelserver::Sha256File(file);
      t.push_back(Ms(start));
    }
    std::printf("{\"what\": \"cpp_sha256\", \"ms\": %.1f}\n", Median(t));
  }
  if (!forward_only) {
    // What the server does: resolve, sha256 beside the load, strict build, swap in.
    auto store = modelserver::CheckpointStore::Create({root, false});
    if (!store.ok()) return 1;
    modelserver::ModelRegistry::Options ro;
    ro.store = store->get();
    modelserver::ModelRegistry registry(ro);
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto s = registry.Load(name, arch, 1);
      t.push_back(Ms(start));
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
    }
    std::printf("{\"what\": \"cpp_store_load\", \"ms\": %.1f}\n", Median(t));
  }
  for (int batch : batches) {
    modelserver::HostTensor x;
    x.dtype = modelserver::DType::kFloat32;
    x.shape = {batch, 3, 224, 224};
    std::vector<float> values(static_cast<size_t>(x.NumElements()));
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] = static_cast<float>((i * 7919) % 1000) / 1000.f;
    }
    x.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    (void)model->Forward(x);  // warm-up: allocations, page faults, oneDNN primitives
    (void)model->Forward(x);
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto y = model->Forward(x);
      t.push_back(Ms(start));
      if (!y.ok()) return 1;
    }
    std::printf("{\"what\": \"cpp_forward_b%d\", \"ms\": %.1f}\n", batch, Median(t));
    std::fflush(stdout);
  }
  return 0;
}
