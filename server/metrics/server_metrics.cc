#include "server/metrics/server_metrics.h"

#include <prometheus/text_serializer.h>

#include "common/status_macros.h"

namespace modelserver {
namespace {

// Latencies from a GPU's milliseconds to a CPU VGG16 batch's seconds.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *b;
}
const prometheus::Histogram::BucketBoundaries& BatchBuckets() {
  static const auto* b =
      new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *b;
}
const prometheus::Histogram::BucketBoundaries& LoadBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return *b;
}

}  // namespace

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("modelserver_requests_total")
                    .Help("RPCs answered, by model, method and gRPC status code.")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("modelserver_request_duration_seconds")
                            .Help("Time from receiving an RPC to answering it.")
                            .Register(*registry_)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("modelserver_queue_duration_seconds")
                          .Help("Time a Predict request waited in the batching queue.")
                          .Register(*registry_)),
      inference_duration_(prometheus::BuildHistogram()
                              .Name("modelserver_inference_duration_seconds")
                              .Help("Time of one batched forward pass.")
                              .Register(*registry_)),
      preprocess_duration_(prometheus::BuildHistogram()
                               .Name("modelserver_preprocess_duration_seconds")
                               .Help("Time to decode and preprocess one input image.")
                               .Register(*registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("modelserver_batch_size")
                      .Help("Samples per executed batch.")
                      .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("modelserver_queue_depth")
                       .Help("Samples waiting in the model's batching queue.")
                       .Register(*registry_)),
      loads_(prometheus::BuildCounter()
                 .Name("modelserver_model_loads_total")
                 .Help("Model version loads, by result (success, failure).")
                 .Register(*registry_)),
      sandbox_restarts_(prometheus::BuildCounter()
                            .Name("modelserver_sandbox_restarts_total")
                            .Help("Sandboxed model workers stopped and restarted, by reason "
                                  "(crash, deadline, memory).")
                            .Register(*registry_)),
      load_duration_(prometheus::BuildHistogram()
                         .Name("modelserver_model_load_duration_seconds")
                         .Help("Time to load, verify and warm up a model version.")
                         .Register(*registry_)),
      serving_version_(prometheus::BuildGauge()
                           .Name("modelserver_model_serving_version")
                           .Help("The version that serves (0 when none).")
                           .Register(*registry_)),
      ready_(prometheus::BuildGauge()
                 .Name("modelserver_model_ready")
                 .Help("1 when the model is READY.")
                 .Register(*registry_)),
      device_memory_(prometheus::BuildGauge()
                         .Name("modelserver_device_memory_bytes")
                         .Help("Bytes of the serving version's weights on its device (GPU "
                               "memory for a CUDA model), in its precision; 0 when nothing "
                               "serves. The device is in GetModelStatus.")
                         .Register(*registry_)),
      build_info_(prometheus::BuildGauge()
                      .Name("modelserver_build_info")
                      .Help("1, labelled with the server's version, LibTorch's version and "
                            "whether LibTorch has CUDA.")
                      .Register(*registry_)),
      inflight_(prometheus::BuildGauge()
                    .Name("modelserver_inflight_requests")
                    .Help("RPCs accepted and not yet answered (queued Predicts included), by "
                          "model (empty until the request named a known model) and method.")
                    .Register(*registry_)),
      process_(std::make_unique<ProcessMetrics>(*registry_)) {}

ServerMetrics::~ServerMetrics() {
  if (http_ != nullptr) http_->Stop();
}

void ServerMetrics::RecordRequest(const std::string& model, const std::string& method,
                                  const std::string& code, double seconds) {
  requests_.Add({{"model", model}, {"method", method}, {"code", code}}).Increment();
  request_duration_.Add({{"model", model}, {"method", method}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordBatch(const std::string& model, int64_t samples, double seconds) {
  batch_size_.Add({{"model", model}}, BatchBuckets()).Observe(static_cast<double>(samples));
  inference_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordPreprocess(const std::string& model, double seconds) {
  preprocess_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordQueueWait(const std::string& model, double seconds) {
  queue_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::RecordLoad(const std::string& model, bool ok, double seconds) {
  loads_.Add({{"model", model}, {"result", ok ? "success" : "failure"}}).Increment();
  load_duration_.Add({{"model", model}}, LoadBuckets()).Observe(seconds);
}

void ServerMetrics::RecordSandboxRestart(const std::string& model, const std::string& reason) {
  sandbox_restarts_.Add({{"model", model}, {"reason", reason}}).Increment();
}

void ServerMetrics::SetQueueDepth(const std::string& model, int64_t samples) {
  queue_depth_.Add({{"model", model}}).Set(static_cast<double>(samples));
}

void ServerMetrics::SetServing(const std::string& model, int64_t version, bool ready) {
  serving_version_.Add({{"model", model}}).Set(static_cast<double>(version));
  ready_.Add({{"model", model}}).Set(ready ? 1 : 0);
}

void ServerMetrics::SetBuildInfo(const std::string& version, const std::string& libtorch,
                                 const std::string& cuda) {
  build_info_.Add({{"version", version}, {"libtorch", libtorch}, {"cuda", cuda}}).Set(1);
}

void ServerMetrics::SetDeviceMemory(const std::string& model, int64_t bytes) {
  device_memory_.Add({{"model", model}}).Set(static_cast<double>(bytes));
}

void ServerMetrics::set_collect_hook(std::function<void(ServerMetrics*)> hook) {
  absl::MutexLock lock(&hook_mu_);
  hook_ = std::move(hook);
}

std::string ServerMetrics::Serialize() {
  process_->Update();
  if (gpu_ != nullptr) gpu_->Update();
  {
    absl::MutexLock lock(&hook_mu_);
    if (hook_) hook_(this);
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

absl::Status ServerMetrics::EnableGpuMetrics(const std::string& library) {
  ASSIGN_OR_RETURN(gpu_, GpuMetrics::Create(*registry_, library));
  return absl::OkStatus();
}

absl::Status ServerMetrics::StartHttp(const std::string& address) {
  HttpEndpoint::Options options;
  options.address = address;
  return StartHttp(std::move(options));
}

absl::Status ServerMetrics::StartHttp(HttpEndpoint::Options options) {
  HttpRouter router;
  AddMetricsRoutes(&router, [this] { return Serialize(); });
  options.blocking_threads = 1;  // no blocking routes here
  ASSIGN_OR_RETURN(http_, HttpEndpoint::Start(std::move(options), std::move(router)));
  return absl::OkStatus();
}

}  // namespace modelserver
