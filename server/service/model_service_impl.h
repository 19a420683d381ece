#ifndef MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_
#define MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_

#include <atomic>

#include "absl/time/time.h"
#include "modelserving/v1/model_service.grpc.pb.h"
#include "server/image/image_decode.h"
#include "server/metrics/server_metrics.h"
#include "server/service/admin_auth.h"
#include "server/serving/model_registry.h"
#include "server/store/checkpoint_store.h"
#include "server/util/task_runner.h"
#include "server/util/worker_pool.h"

namespace modelserver {

// The gRPC ModelService (callback API). Stateless apart from the shutdown flag:
// validates requests, looks models up in the registry, maps errors to codes.
// Predict queues the request on the model's batching queue and returns; no thread
// waits for it (the batch worker finishes the reactor).
// RPCs not implemented yet answer UNIMPLEMENTED (the generated default).
//
// Thread-safe.
class ModelServiceImpl final : public modelserving::v1::ModelService::CallbackService {
 public:
  struct Options {
    uint64_t max_upload_bytes = 4ull << 30;  // UploadCheckpoint limit
    size_t chunk_bytes = 1 << 20;            // DownloadCheckpoint chunk size
    AdminAuth auth;                          // guards the admin RPCs
    ServerMetrics* metrics = nullptr;        // not owned; may be null
    // Predict request bytes held at once (parsed, queued or computing); past it
    // Predict answers RESOURCE_EXHAUSTED at once. 0: no limit.
    int64_t max_inflight_request_bytes = 0;
    // Input elements per Predict for models that cannot estimate their forward
    // memory (TorchScript, layer stacks); INVALID_ARGUMENT past it.
    int64_t max_input_elements = 16 << 20;
    // Decodes PredictRequest.images (not owned; null: images are UNIMPLEMENTED).
    WorkerPool* image_pool = nullptr;
    DecodeLimits image_limits;
  };
  // Forward memory assumed per input byte for models that cannot estimate it.
  static constexpr int64_t kUnknownForwardBytesPerInputByte = 32;
  // `registry` and `store` are not owned and outlive the service.
  ModelServiceImpl(ModelRegistry* registry, const CheckpointStore* store, Options options)
      : registry_(registry),
        store_(store),
        options_(options),
        auth_(options.auth),
        metrics_(options.metrics) {}
  ~ModelServiceImpl() override { admin_.Shutdown(); }

  // Records one RPC in the metrics when it finishes (defined in the .cc).
  struct Rpc;

  // After this, Predict answers UNAVAILABLE.
  void StartShutdown() { shutting_down_.store(true); }
  // Waits until every RPC that was accepted has been answered (queued Predicts
  // included), at most `timeout`. False on timeout.
  bool WaitIdle(absl::Duration timeout) const;

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const modelserving::v1::PredictRequest* request,
                                    modelserving::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const modelserving::v1::ListModelsRequest* request,
                                       modelserving::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelStatus(grpc::CallbackServerContext* context,
                                           const modelserving::v1::GetModelStatusRequest* request,
                                           modelserving::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* SaveModel(grpc::CallbackServerContext* context,
                                      const modelserving::v1::SaveModelRequest* request,
                                      modelserving::v1::SaveModelResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const modelserving::v1::LoadModelRequest* request,
                                      modelserving::v1::LoadModelResponse* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const modelserving::v1::UnloadModelRequest* request,
                                        modelserving::v1::UnloadModelResponse* response) override;
  grpc::ServerReadReactor<modelserving::v1::UploadCheckpointRequest>* UploadCheckpoint(
      grpc::CallbackServerContext* context,
      modelserving::v1::UploadCheckpointResponse* response) override;
  grpc::ServerWriteReactor<modelserving::v1::DownloadCheckpointResponse>* DownloadCheckpoint(
      grpc::CallbackServerContext* context,
      const modelserving::v1::DownloadCheckpointRequest* request) override;

 private:
  // The forward memory of `input` (batched shape) on `model`: its estimate, else
  // input bytes x kUnknownForwardBytesPerInputByte within max_input_elements.
  absl::StatusOr<int64_t> ForwardBytes(const Model& model, const HostTensor& input) const;
  friend class InferenceServiceImpl;  // the second front door, through the same paths

  // Predict's path for both front doors (`request` must live until the call is
  // finished: image decoding reads it later): the in-flight byte budget
  // (`request_bytes` held), validation (`parsed`: the front door's own parse
  // of the request), the batching queue; `rpc` records it and converts the
  // response for the other front door.
  grpc::ServerUnaryReactor* PredictVia(grpc::CallbackServerContext* context,
                                       const modelserving::v1::PredictRequest& request,
                                       const absl::Status& parsed,
                                       modelserving::v1::PredictResponse* response, Rpc rpc,
                                       int64_t request_bytes);
  // Adds `bytes` to what `rpc` holds against max_inflight_request_bytes (given
  // back when it finishes); RESOURCE_EXHAUSTED naming `what` past the limit.
  absl::Status Hold(Rpc* rpc, int64_t bytes, const std::string& what);
  // Validates the request and queues it; on OK the batch worker owns `reactor`.
  absl::Status StartPredict(grpc::CallbackServerContext* context,
                            const modelserving::v1::PredictRequest& request,
                            modelserving::v1::PredictResponse* response,
                            grpc::ServerUnaryReactor* reactor, Rpc* rpc);
  // Predict with `images`: checks the shape they become against the model,
  // reserves their tensor in the in-flight budget, and posts one decode task per
  // image to the image pool; the last one queues the batch task (or answers the
  // first bad image's error). On OK the pool owns `reactor`.
  absl::Status StartImagePredict(grpc::CallbackServerContext* context,
                                 const modelserving::v1::PredictRequest& request,
                                 ModelHandle handle, modelserving::v1::PredictResponse* response,
                                 grpc::ServerUnaryReactor* reactor, Rpc* rpc);
  // The batch task for a validated input; its `done` fills `response` and
  // finishes `reactor`.
  BatchTask MakeTask(grpc::CallbackServerContext* context,
                     const modelserving::v1::PredictRequest& request, const ModelHandle& handle,
                     HostTensor input, int64_t forward_bytes, bool unbatched, DType wire,
                     modelserving::v1::PredictResponse* response, grpc::ServerUnaryReactor* reactor,
                     const Rpc& rpc) const;

  ModelRegistry* const registry_;
  const CheckpointStore* const store_;
  const Options options_;
  const AdminAuth auth_;
  ServerMetrics* const metrics_;
  std::atomic<bool> shutting_down_{false};
  mutable std::atomic<int> inflight_{0};            // RPCs accepted and not yet answered
  std::atomic<int64_t> inflight_request_bytes_{0};  // Predict requests held
  TaskRunner admin_;  // SaveModel and upload commits run here, off gRPC's threads
};

// Fills the API message from a registry status.
void ToProto(const ModelStatusInfo& info, modelserving::v1::ModelStatus* proto);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_
