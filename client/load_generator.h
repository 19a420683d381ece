#ifndef MODELSERVER_CLIENT_LOAD_GENERATOR_H_
#define MODELSERVER_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/model_client.h"

namespace modelserver {

// A closed-loop load generator (in the spirit of perf_analyzer and ghz): at each
// concurrency level, that many threads each send Predict, wait for the answer and
// send the next, for `warmup` (not counted) then `duration`. Throughput and
// latencies are of the requests that complete inside the measured window.
struct LoadOptions {
  std::string model;
  std::vector<int> concurrency = {1, 4, 16};
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::Seconds(2);
  int64_t batch = 1;                                  // samples per request
  std::vector<int64_t> sample_shape = {3, 224, 224};  // per-sample shape
  int top_k = 0;
  uint32_t seed = 0;
  // Encoded images (JPEG, PNG, WebP): when given, each request sends `batch` of
  // them (PredictRequest.images, cycling through the list) instead of a tensor.
  std::vector<std::string> images;
  // Triton's system shared memory: each client thread creates an input and an
  // output POSIX shared memory object, registers them, writes its input once and
  // sends ModelInfer requests that name them (reading each output back from its
  // region); unregistered and removed after the level.
  bool shared_memory = false;
};

struct LevelResult {
  int concurrency = 0;
  int64_t requests = 0;  // answered OK inside the measured window
  int64_t samples = 0;
  double seconds = 0;
  double requests_per_second = 0;
  double samples_per_second = 0;
  // Latency of OK requests, milliseconds.
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
  std::map<std::string, int64_t> errors;  // status code name -> count (whole run)
};

// Runs every level in turn. Blocks for sum(warmup + duration).
std::vector<LevelResult> RunLoad(const ModelClient& client, const LoadOptions& options);

// Output formats (one row per level).
std::string FormatTable(const std::vector<LevelResult>& results);
std::string FormatCsv(const std::vector<LevelResult>& results);
std::string FormatJson(const std::vector<LevelResult>& results);

// Value at quantile q (0..1) of `sorted`, nearest rank; 0 when empty.
double Quantile(const std::vector<double>& sorted, double q);

}  // namespace modelserver

#endif  // MODELSERVER_CLIENT_LOAD_GENERATOR_H_
