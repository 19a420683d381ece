#ifndef MODELSERVER_SERVER_SERVICE_STREAM_INFER_H_
#define MODELSERVER_SERVER_SERVICE_STREAM_INFER_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"

namespace modelserver {

// Triton's ModelStreamInfer: a stream of ModelInferRequests, one
// ModelStreamInferResponse per request, in the order the requests came, `id`
// echoed. Each request is the same ModelInfer call a unary client makes (through
// `stub` on the server's in-process channel: the same validation, budgets,
// batching queue and metrics); a request that fails is answered in the stream
// with its `error_message`, and the stream goes on. Up to kMaxInFlight requests
// of one stream are computed at once (they may share batches); reading pauses
// while that many wait.
//
// A stream whose peer passed the admin check gets `gateway_secret` (AdminAuth's)
// on its calls, so that their admin checks (shared memory) see that peer rather
// than the in-process channel; "" for any other stream.
//
// Owns itself: deleted in OnDone, which gRPC calls only after Finish, which is
// called only when no call of this stream is outstanding. Thread-safe.
class StreamInferReactor : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                          inference::ModelStreamInferResponse> {
 public:
  static constexpr int kMaxInFlight = 16;

  StreamInferReactor(grpc::CallbackServerContext* context,
                     std::shared_ptr<inference::GRPCInferenceService::Stub> stub,
                     std::string gateway_secret);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }
  void OnCancel() override;

 private:
  struct Call {
    grpc::ClientContext context;
    inference::ModelInferRequest request;
    inference::ModelInferResponse response;
    grpc::Status status;
    bool done = false;
    inference::ModelStreamInferResponse answer;
  };

  // What to start once mu_ is released (a reaction may run inline).
  struct Steps {
    bool read = false;
    const inference::ModelStreamInferResponse* write = nullptr;
    bool finish = false;
    grpc::Status status;
  };
  // Whether a read should start now (and marks it started).
  bool WantReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(const Steps& steps) ABSL_LOCKS_EXCLUDED(mu_);
  void OnCallDone(Call* call) ABSL_LOCKS_EXCLUDED(mu_);
  // The oldest answered call is written when no write is in flight; the stream
  // finishes when reading has ended and nothing is outstanding.
  void ProgressLocked(Steps* steps) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<inference::GRPCInferenceService::Stub> stub_;
  std::string authorization_;         // passed on to each call
  const std::string gateway_secret_;  // passed on to each call when set
  absl::Mutex mu_;
  inference::ModelInferRequest next_;  // the read in flight (one at a time: reading_)
  std::deque<std::unique_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);  // in request order
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_STREAM_INFER_H_
