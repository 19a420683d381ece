// The cost of running a TorchScript model in a sandboxed worker (SandboxedModel)
// against in process (TorchScriptModel), on one file and one input: load time,
// and the mean time of one forward pass (after warm-up), each the same number of
// times, alternating. The difference per forward is the transport's cost per
// batch (two memfds, two messages, a thread switch into another process).
//
//   sandbox_bench MODEL_WORKER TORCHSCRIPT_FILE N C H W [ITERATIONS]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "server/model/torchscript_model.h"
#include "server/sandbox/sandboxed_model.h"

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: sandbox_bench MODEL_WORKER FILE N C H W [ITERATIONS]\n");
    return 2;
  }
  using modelserver::HostTensor;
  const std::string worker = argv[1], path = argv[2];
  const int iterations = argc > 7 ? std::atoi(argv[7]) : 200;
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  HostTensor x;
  x.dtype = modelserver::DType::kFloat32;
  x.shape = {std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoll(argv[6])};
  std::mt19937 rng(0);
  std::normal_distribution<float> normal;
  std::string data(static_cast<size_t>(x.NumElements()) * 4, '\0');
  for (size_t i = 0; i < data.size(); i += 4) {
    const float v = normal(rng);
    std::memcpy(data.data() + i, &v, 4);
  }
  x.data = data;

  auto t0 = Clock::now();
  auto local = modelserver::TorchScriptModel::Load(path, "cpu");
  auto t1 = Clock::now();
  modelserver::SandboxedModel::Options options;
  options.worker_path = worker;
  auto sandboxed = modelserver::SandboxedModel::Load(ss.str(), options);
  auto t2 = Clock::now();
  if (!local.ok() || !sandboxed.ok()) {
    std::fprintf(stderr, "load failed: %s / %s\n", local.status().ToString().c_str(),
                 sandboxed.status().ToString().c_str());
    return 1;
  }
  const modelserver::Model* models[2] = {local->get(), sandboxed->get()};
  double total[2] = {0, 0};
  for (int w = 0; w < 5; ++w) {
    for (const auto* m : models) (void)m->Forward(x);
  }
  for (int i = 0; i < iterations; ++i) {
    for (int k = 0; k < 2; ++k) {
      const auto a = Clock::now();
      auto out = models[k]->Forward(x);
      const auto b = Clock::now();
      if (!out.ok()) {
        std::fprintf(stderr, "forward failed: %s\n", out.status().ToString().c_str());
        return 1;
      }
      total[k] += Ms(a, b);
    }
  }
  std::printf("file %s, input %s, %d forwards each, alternating\n", path.c_str(),
              modelserver::ShapeString(x.shape).c_str(), iterations);
  std::printf("load: in process %.1f ms, sandboxed %.1f ms (worker start + confine + load)\n",
              Ms(t0, t1), Ms(t1, t2));
  std::printf("forward: in process %.3f ms, sandboxed %.3f ms, difference %.1f us per batch\n",
              total[0] / iterations, total[1] / iterations,
              (total[1] - total[0]) / iterations * 1000);
  std::printf("sandbox: %s\n", (*sandboxed)->sandbox_summary().c_str());
  return 0;
}
