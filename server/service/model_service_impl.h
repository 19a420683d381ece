#ifndef MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_
#define MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_

#include <atomic>

#include "proto/modelserving/v1/model_service.grpc.pb.h"
#include "server/serving/model_registry.h"

namespace modelserver {

// The gRPC ModelService (callback API). Stateless apart from the shutdown flag:
// validates requests, looks models up in the registry, maps errors to codes.
// RPCs not implemented yet answer UNIMPLEMENTED (the generated default).
//
// Thread-safe.
class ModelServiceImpl final : public modelserving::v1::ModelService::CallbackService {
 public:
  // `registry` is not owned and outlives the service.
  explicit ModelServiceImpl(ModelRegistry* registry) : registry_(registry) {}

  // After this, Predict answers UNAVAILABLE.
  void StartShutdown() { shutting_down_.store(true); }

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const modelserving::v1::PredictRequest* request,
                                    modelserving::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const modelserving::v1::ListModelsRequest* request,
                                       modelserving::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelStatus(grpc::CallbackServerContext* context,
                                           const modelserving::v1::GetModelStatusRequest* request,
                                           modelserving::v1::ModelStatus* response) override;

 private:
  absl::Status DoPredict(const modelserving::v1::PredictRequest& request,
                         modelserving::v1::PredictResponse* response);

  ModelRegistry* const registry_;
  std::atomic<bool> shutting_down_{false};
};

// Fills the API message from a registry status.
void ToProto(const ModelStatusInfo& info, modelserving::v1::ModelStatus* proto);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_MODEL_SERVICE_IMPL_H_
