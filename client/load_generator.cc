#include "client/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace modelserver {

namespace v1 = modelserving::v1;

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

namespace {

using Clock = std::chrono::steady_clock;

// One closed-loop client: sends `request` until `end`, keeping the latencies of
// requests that complete inside [measure_from, end] and counting errors by code.
void ClientLoop(const ModelClient& client, const v1::PredictRequest& request,
                Clock::time_point measure_from, Clock::time_point end,
                std::vector<double>* latencies, std::map<std::string, int64_t>* errors) {
  while (true) {
    const Clock::time_point sent = Clock::now();
    if (sent >= end) break;
    v1::PredictResponse response;
    grpc::Status s = client.Predict(request, &response);
    const Clock::time_point got = Clock::now();
    // A request counts when it completes inside the measured window, wherever it
    // was sent: with latencies near the window's length, counting only requests
    // sent inside it would undercount throughput.
    if (!s.ok()) {
      ++(*errors)[StatusCodeName(s.error_code())];
    } else if (got >= measure_from && got <= end) {
      latencies->push_back(std::chrono::duration<double, std::milli>(got - sent).count());
    }
  }
}

LevelResult RunLevel(const ModelClient& client, const v1::PredictRequest& request,
                     const LoadOptions& options, int concurrency) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point measure_from = start + absl::ToChronoNanoseconds(options.warmup);
  const Clock::time_point end = measure_from + absl::ToChronoNanoseconds(options.duration);
  std::mutex mu;
  std::vector<double> latencies;
  LevelResult level;
  level.concurrency = concurrency;
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      std::vector<double> mine;
      std::map<std::string, int64_t> errors;
      ClientLoop(client, request, measure_from, end, &mine, &errors);
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
      for (const auto& [k, v] : errors) level.errors[k] += v;
    });
  }
  for (std::thread& t : threads) t.join();
  std::sort(latencies.begin(), latencies.end());
  level.requests = static_cast<int64_t>(latencies.size());
  level.samples = level.requests * options.batch;
  level.seconds = absl::ToDoubleSeconds(options.duration);
  level.requests_per_second = static_cast<double>(level.requests) / level.seconds;
  level.samples_per_second = static_cast<double>(level.samples) / level.seconds;
  level.p50 = Quantile(latencies, 0.50);
  level.p90 = Quantile(latencies, 0.90);
  level.p95 = Quantile(latencies, 0.95);
  level.p99 = Quantile(latencies, 0.99);
  level.max = latencies.empty() ? 0 : latencies.back();
  return level;
}

}  // namespace

std::vector<LevelResult> RunLoad(const ModelClient& client, const LoadOptions& options) {
  HostTensor input;
  input.dtype = DType::kFloat32;
  input.shape = {options.batch};
  input.shape.insert(input.shape.end(), options.sample_shape.begin(), options.sample_shape.end());
  std::mt19937 rng(options.seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(input.NumElements()));
  for (float& v : values) v = normal(rng);
  input.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  v1::PredictRequest request = MakePredictRequest(options.model, input, options.top_k);
  if (!options.images.empty()) {
    request.clear_input();
    for (int64_t i = 0; i < options.batch; ++i) {
      request.add_images(options.images[static_cast<size_t>(i) % options.images.size()]);
    }
  }
  std::vector<LevelResult> results;
  for (int concurrency : options.concurrency) {
    results.push_back(RunLevel(client, request, options, concurrency));
  }
  return results;
}

namespace {
std::string Errors(const LevelResult& r, const char* sep) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : r.errors) parts.push_back(absl::StrCat(k, "=", v));
  return parts.empty() ? "none" : absl::StrJoin(parts, sep);
}
}  // namespace

std::string FormatTable(const std::vector<LevelResult>& results) {
  std::string out =
      absl::StrFormat("%11s %9s %9s %9s %9s %9s %9s %9s  %s\n", "concurrency", "req/s", "samples/s",
                      "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "errors");
  for (const LevelResult& r : results) {
    absl::StrAppendFormat(&out, "%11d %9.2f %9.2f %9.1f %9.1f %9.1f %9.1f %9.1f  %s\n",
                          r.concurrency, r.requests_per_second, r.samples_per_second, r.p50, r.p90,
                          r.p95, r.p99, r.max, Errors(r, " "));
  }
  return out;
}

std::string FormatCsv(const std::vector<LevelResult>& results) {
  std::string out =
      "concurrency,requests,samples,seconds,requests_per_second,samples_per_second,p50_ms,p90_ms,"
      "p95_ms,p99_ms,max_ms,errors\n";
  for (const LevelResult& r : results) {
    absl::StrAppendFormat(&out, "%d,%d,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%s\n",
                          r.concurrency, r.requests, r.samples, r.seconds, r.requests_per_second,
                          r.samples_per_second, r.p50, r.p90, r.p95, r.p99, r.max, Errors(r, ";"));
  }
  return out;
}

std::string FormatJson(const std::vector<LevelResult>& results) {
  std::vector<std::string> rows;
  for (const LevelResult& r : results) {
    std::vector<std::string> errs;
    for (const auto& [k, v] : r.errors) errs.push_back(absl::StrFormat("\"%s\": %d", k, v));
    rows.push_back(absl::StrFormat(
        "{\"concurrency\": %d, \"requests\": %d, \"samples\": %d, \"seconds\": %.3f, "
        "\"requests_per_second\": %.3f, \"samples_per_second\": %.3f, \"p50_ms\": %.3f, "
        "\"p90_ms\": %.3f, \"p95_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
        "\"errors\": {%s}}",
        r.concurrency, r.requests, r.samples, r.seconds, r.requests_per_second,
        r.samples_per_second, r.p50, r.p90, r.p95, r.p99, r.max, absl::StrJoin(errs, ", ")));
  }
  return absl::StrCat("[\n  ", absl::StrJoin(rows, ",\n  "), "\n]\n");
}

}  // namespace modelserver
