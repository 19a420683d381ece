#ifndef MODELSERVER_SERVER_SERVICE_INFERENCE_SERVICE_IMPL_H_
#define MODELSERVER_SERVER_SERVICE_INFERENCE_SERVICE_IMPL_H_

#include <grpcpp/channel.h>

#include <memory>
#include <string>
#include <vector>

#include "inference/v2/grpc_predict_v2.grpc.pb.h"
#include "server/service/model_service_impl.h"
#include "server/service/shared_memory_regions.h"
#include "server/serving/model_registry.h"

namespace modelserver {

// The Open Inference Protocol ("KServe v2", inference.GRPCInferenceService) with
// Triton's classification and model-repository extensions: a second front door
// onto the same registry, batching queue, budgets, metrics and admin auth as
// ModelService (ModelInfer runs through ModelServiceImpl's Predict path; errors
// carry Predict's codes and messages). Model versions are decimal strings;
// platform "pytorch_libtorch"; one input (any name; "input" in the metadata) and
// one output, "output".
//
// Thread-safe; stateless.
class InferenceServiceImpl final : public inference::GRPCInferenceService::CallbackService {
 public:
  struct Options {
    // The --model names given at startup: ServerReady is true when all serve.
    std::vector<std::string> startup_models;
    std::string server_version;
    // Triton's system shared memory (--allow_shared_memory); null: off, its
    // calls and parameters are FAILED_PRECONDITION. Not owned; outlives this.
    SharedMemoryRegions* shared_memory = nullptr;
    // The most bytes one input read from shared memory may hold.
    uint64_t max_message_bytes = 64 << 20;
  };
  // `service` and `registry` are not owned and outlive this.
  InferenceServiceImpl(ModelServiceImpl* service, ModelRegistry* registry, Options options)
      : service_(service), registry_(registry), options_(std::move(options)) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;
  // Triton's streaming extension (StreamInferReactor); needs set_channel.
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  // The server's in-process channel, once it listens: ModelStreamInfer makes its
  // calls through it. Call before serving.
  void set_channel(const std::shared_ptr<grpc::Channel>& channel) {
    stub_ = inference::GRPCInferenceService::NewStub(channel);
  }

  // Triton's extensions: the configuration derived from what the server knows
  // (ModelConfig), and per-version statistics of the batches run (ModelStatistics).
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;

  // Triton's system shared memory extension: admin calls, on with
  // --allow_shared_memory only (FAILED_PRECONDITION otherwise). An inference
  // input or output naming a region needs the same admin check.
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryStatusRequest* request,
      inference::SystemSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryRegisterRequest* request,
      inference::SystemSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryUnregisterRequest* request,
      inference::SystemSharedMemoryUnregisterResponse* response) override;

 private:
  // The serving model of `name` at `version` ("" = serving): Predict's errors.
  absl::StatusOr<ModelHandle> Serving(const std::string& name, const std::string& version) const;
  // Shared memory is on and the caller passes the admin check.
  absl::Status CheckSharedMemory(const grpc::CallbackServerContext& context) const;
  // A copy of `request` with its shared memory inputs read.
  absl::StatusOr<std::shared_ptr<const inference::ModelInferRequest>> WithSharedMemoryInputs(
      const grpc::CallbackServerContext& context,
      const inference::ModelInferRequest& request) const;

  ModelServiceImpl* const service_;
  ModelRegistry* const registry_;
  const Options options_;
  std::shared_ptr<inference::GRPCInferenceService::Stub> stub_;  // set before serving
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_INFERENCE_SERVICE_IMPL_H_
