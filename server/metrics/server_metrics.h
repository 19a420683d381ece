#ifndef MODELSERVER_SERVER_METRICS_SERVER_METRICS_H_
#define MODELSERVER_SERVER_METRICS_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics/gpu_metrics.h"
#include "server/metrics/http_endpoint.h"
#include "server/metrics/process_metrics.h"

namespace modelserver {

// Owns the Prometheus registry, every metric family of the contract, and the
// /metrics endpoint. Fed by the places that know: the gRPC handlers (requests),
// the batching queues (batches, waits), the registry (loads); gauges of state
// (queue depth, serving version, ready) are refreshed by a collect hook at
// scrape time, so the hot path pays nothing for them.
//
// Thread-safe (prometheus-cpp metrics are).
class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();

  // One finished RPC: `code` is the gRPC status name ("OK", "UNAVAILABLE", ...).
  void RecordRequest(const std::string& model, const std::string& method, const std::string& code,
                     double seconds);
  // One forward pass of `samples` samples that took `seconds`.
  void RecordBatch(const std::string& model, int64_t samples, double seconds);
  // One image decoded and preprocessed (PredictRequest.images).
  void RecordPreprocess(const std::string& model, double seconds);
  // One request's wait in the queue before its batch ran.
  void RecordQueueWait(const std::string& model, double seconds);
  // One model load; `result` "success" or "failure".
  void RecordLoad(const std::string& model, bool ok, double seconds);
  // A sandboxed worker of `model` was stopped: "crash", "deadline" or "memory".
  void RecordSandboxRestart(const std::string& model, const std::string& reason);
  void SetQueueDepth(const std::string& model, int64_t samples);
  void SetServing(const std::string& model, int64_t version, bool ready);
  // The serving version's weight bytes on its device (0 when nothing serves).
  void SetDeviceMemory(const std::string& model, int64_t bytes);
  // modelserver_build_info{version, libtorch, cuda} 1.
  void SetBuildInfo(const std::string& version, const std::string& libtorch,
                    const std::string& cuda);
  // modelserver_inflight_requests{model, method}: RPCs accepted and not yet
  // answered; `model` is empty until the request named a model the server knows.
  void AddInflight(const std::string& model, const std::string& method, int delta) {
    inflight_.Add({{"model", model}, {"method", method}}).Increment(delta);
  }

  // Per-GPU series through NVML (server/metrics/gpu_metrics.h), read at each
  // scrape. Call once, before StartHttp. The reason when there are none (no
  // library: every CPU machine; NVML refused; no GPU): the caller logs it.
  absl::Status EnableGpuMetrics(const std::string& library = GpuMetrics::kDefaultLibrary);

  // Called before each scrape (sets the state gauges).
  void set_collect_hook(std::function<void(ServerMetrics*)> hook);

  // The Prometheus text exposition of every family.
  std::string Serialize();

  // Serves /metrics on `address`. UNAVAILABLE when it cannot bind.
  absl::Status StartHttp(const std::string& address);
  // The same with the endpoint's limits (options.address is the address).
  absl::Status StartHttp(HttpEndpoint::Options options);
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  void StopHttp() {
    if (http_ != nullptr) http_->Stop();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& inference_duration_;
  prometheus::Family<prometheus::Histogram>& preprocess_duration_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Counter>& loads_;
  prometheus::Family<prometheus::Counter>& sandbox_restarts_;
  prometheus::Family<prometheus::Histogram>& load_duration_;
  prometheus::Family<prometheus::Gauge>& serving_version_;
  prometheus::Family<prometheus::Gauge>& ready_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  std::unique_ptr<ProcessMetrics> process_;  // process_* series
  std::unique_ptr<GpuMetrics> gpu_;          // null without NVML
  absl::Mutex hook_mu_;
  std::function<void(ServerMetrics*)> hook_ ABSL_GUARDED_BY(hook_mu_);
  std::unique_ptr<HttpEndpoint> http_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_SERVER_METRICS_H_
