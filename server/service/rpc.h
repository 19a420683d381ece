#ifndef MODELSERVER_SERVER_SERVICE_RPC_H_
#define MODELSERVER_SERVER_SERVICE_RPC_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/service/model_service_impl.h"
#include "server/service/status_mapping.h"

namespace modelserver {

// `model` stays empty until the request named a model the server knows (user
// input never becomes a label).
struct ModelServiceImpl::Rpc {
  // Counts the RPC in flight until Record (copies do not count again).
  Rpc(const ModelServiceImpl* service, const char* name)
      : metrics(service->metrics_),
        inflight(&service->inflight_),
        store(service->store_),
        method(name) {
    ++*inflight;
    if (metrics != nullptr) metrics->AddInflight("", method, 1);
  }

  // The request named a model the server knows: it becomes the metrics' label
  // (and the in-flight count moves to it). Call before copying the Rpc.
  void SetModel(const std::string& name) {
    if (metrics != nullptr && name != model) {
      metrics->AddInflight(model, method, -1);
      metrics->AddInflight(name, method, 1);
    }
    model = name;
  }

  ServerMetrics* metrics;
  std::atomic<int>* inflight;
  const CheckpointStore* store;  // describes store paths in error messages
  const char* method;
  std::string model;  // set through SetModel
  absl::Time start = absl::Now();
  // Request bytes this call holds against the in-flight budget (Predict).
  std::atomic<int64_t>* held_bytes = nullptr;
  int64_t bytes = 0;
  // Another front door's response, filled from Predict's when it succeeded (run
  // on the finishing thread; its error, if any, is the call's).
  std::function<absl::Status()> convert;

  void Record(const grpc::Status& s) const {
    --*inflight;
    if (metrics != nullptr) metrics->AddInflight(model, method, -1);
    if (held_bytes != nullptr) *held_bytes -= bytes;
    if (metrics == nullptr) return;
    metrics->RecordRequest(model, method,
                           absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())),
                           absl::ToDoubleSeconds(absl::Now() - start));
  }
  // `status` with server paths replaced by what the store calls them.
  absl::Status Described(const absl::Status& status) const {
    if (status.ok() || store == nullptr) return status;
    return absl::Status(status.code(), store->Describe(status.message()));
  }
  // Finishes a unary call.
  void Finish(grpc::ServerUnaryReactor* reactor, absl::Status status) const {
    if (status.ok() && convert) status = convert();
    const grpc::Status s = ToGrpcStatus(Described(status));
    Record(s);
    reactor->Finish(s);
  }
};
}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_RPC_H_
