#include "client/load_generator.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/shared_memory.h"
#include "common/oip_datatype.h"
#include "common/status_macros.h"

namespace modelserver {

namespace v1 = modelserving::v1;

double Quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

namespace {

using Clock = std::chrono::steady_clock;

// One closed-loop client: makes `call` until `end`, keeping the latencies of
// calls that complete inside [measure_from, end] and counting errors by code.
void ClientLoop(const std::function<grpc::Status()>& call, Clock::time_point measure_from,
                Clock::time_point end, std::vector<double>* latencies,
                std::map<std::string, int64_t>* errors) {
  while (true) {
    const Clock::time_point sent = Clock::now();
    if (sent >= end) break;
    grpc::Status s = call();
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

// Client `t` of a level through shared memory: its regions, registered, and the
// ModelInfer request naming them; `call` sends it and reads the output back.
class SharedMemoryClient {
 public:
  static absl::StatusOr<std::unique_ptr<SharedMemoryClient>> Create(
      const ModelClient& client, const v1::PredictRequest& request, size_t output_bytes, int t) {
    auto c = std::unique_ptr<SharedMemoryClient>(new SharedMemoryClient(client));
    const std::string base = absl::StrCat("model-client-", getpid(), "-", t);
    const std::string& input = request.input().data();
    ASSIGN_OR_RETURN(c->in_, SharedMemoryObject::Create("/" + base + "-in", input.size()));
    ASSIGN_OR_RETURN(c->out_, SharedMemoryObject::Create("/" + base + "-out", output_bytes));
    std::memcpy(c->in_->data(), input.data(), input.size());
    c->names_ = {base + "-in", base + "-out"};
    for (int i = 0; i < 2; ++i) {
      const SharedMemoryObject& o = i == 0 ? *c->in_ : *c->out_;
      grpc::Status s = client.RegisterSystemSharedMemory(c->names_[i], o.key(), o.size());
      if (!s.ok()) {
        return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
      }
      c->registered_ = i + 1;
    }
    c->request_.set_model_name(request.model_name());
    auto* in = c->request_.add_inputs();
    in->set_name("input");
    in->set_datatype(DatatypeOf(static_cast<DType>(request.input().dtype())));
    in->mutable_shape()->CopyFrom(request.input().shape());
    (*in->mutable_parameters())["shared_memory_region"].set_string_param(c->names_[0]);
    (*in->mutable_parameters())["shared_memory_byte_size"].set_int64_param(
        static_cast<int64_t>(input.size()));
    auto* out = c->request_.add_outputs();
    out->set_name("output");
    (*out->mutable_parameters())["shared_memory_region"].set_string_param(c->names_[1]);
    (*out->mutable_parameters())["shared_memory_byte_size"].set_int64_param(
        static_cast<int64_t>(output_bytes));
    return c;
  }
  ~SharedMemoryClient() {
    for (int i = 0; i < registered_; ++i) (void)client_.UnregisterSystemSharedMemory(names_[i]);
  }

  grpc::Status Call() {
    inference::ModelInferResponse response;
    grpc::Status s = client_.ModelInfer(request_, &response);
    if (!s.ok()) return s;
    if (response.outputs_size() != 1) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "ModelInfer answered without one output");
    }
    const auto& params = response.outputs(0).parameters();
    auto n = params.find("shared_memory_byte_size");
    if (n == params.end() || n->second.int64_param() < 0 ||
        static_cast<size_t>(n->second.int64_param()) > out_->size()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "the output is not in shared memory");
    }
    output_.assign(out_->data(),
                   static_cast<size_t>(n->second.int64_param()));  // the client reads it
    return s;
  }

 private:
  explicit SharedMemoryClient(const ModelClient& client) : client_(client) {}
  const ModelClient& client_;
  std::unique_ptr<SharedMemoryObject> in_, out_;
  std::vector<std::string> names_;
  int registered_ = 0;
  inference::ModelInferRequest request_;
  std::string output_;
};

LevelResult RunLevel(const ModelClient& client, const v1::PredictRequest& request,
                     const LoadOptions& options, size_t output_bytes, int concurrency) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point measure_from = start + absl::ToChronoNanoseconds(options.warmup);
  const Clock::time_point end = measure_from + absl::ToChronoNanoseconds(options.duration);
  std::mutex mu;
  std::vector<double> latencies;
  LevelResult level;
  level.concurrency = concurrency;
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      std::vector<double> mine;
      std::map<std::string, int64_t> errors;
      std::function<grpc::Status()> call = [&client, &request] {
        v1::PredictResponse response;
        return client.Predict(request, &response);
      };
      std::unique_ptr<SharedMemoryClient> shm;
      if (options.shared_memory) {
        absl::StatusOr<std::unique_ptr<SharedMemoryClient>> made =
            SharedMemoryClient::Create(client, request, output_bytes, t);
        if (made.ok()) {
          shm = *std::move(made);
          call = [&shm] { return shm->Call(); };
        } else {
          std::fprintf(stderr, "bench: shared memory: %s\n",
                       std::string(made.status().message()).c_str());
          call = [] { return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "no region"); };
          std::this_thread::sleep_until(end);
        }
      }
      ClientLoop(call, measure_from, end, &mine, &errors);
      shm.reset();
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
  // Through shared memory, the output region is sized from one answer.
  size_t output_bytes = 1;
  if (options.shared_memory) {
    v1::PredictResponse probe;
    if (client.Predict(request, &probe).ok()) {
      output_bytes = std::max<size_t>(1, probe.output().data().size());
    }
  }
  std::vector<LevelResult> results;
  for (int concurrency : options.concurrency) {
    results.push_back(RunLevel(client, request, options, output_bytes, concurrency));
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
