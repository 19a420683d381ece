#ifndef MODELSERVER_CLIENT_MODEL_CLIENT_H_
#define MODELSERVER_CLIENT_MODEL_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/host_tensor.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"
#include "modelserving/v1/model_service.grpc.pb.h"

namespace modelserver {

// A thin client for ModelService: one channel, typed calls with a deadline.
// Thread-safe (gRPC stubs are).
//
//   auto client = ModelClient::Create({.target = "localhost:50051"});
//   modelserving::v1::PredictResponse resp;
//   grpc::Status s = client->Predict(MakePredictRequest("vgg16", input, 5), &resp);
class ModelClient {
 public:
  struct Options {
    std::string target = "localhost:50051";
    int64_t max_message_bytes = 64 << 20;
    std::chrono::milliseconds timeout{60000};
    // TLS: PEM file paths. `tls_ca` set turns TLS on (server verified against it);
    // `tls_cert` + `tls_key` add a client certificate (mutual TLS).
    std::string tls_ca, tls_cert, tls_key;
    // Admin token, sent as `authorization: Bearer <token>` on every call.
    std::string token;
    // Predict through the Open Inference Protocol (KServe v2 ModelInfer, raw
    // tensors) instead of modelserving.v1; the answer is converted back (top-k
    // classes are not asked for).
    bool open_inference = false;
    // gRPC load-balancing policy: "pick_first" (gRPC's default) or "round_robin"
    // (spreads calls over every address a dns:/// target resolves to, e.g. a
    // Kubernetes headless Service's pods).
    std::string lb_policy;
    // Called as Upload / Download move bytes: (bytes so far, total bytes).
    std::function<void(uint64_t done, uint64_t total)> progress;
  };
  // Fails only when a TLS file cannot be read.
  static std::unique_ptr<ModelClient> Create(const Options& options);
  // Plaintext, default options.
  static std::unique_ptr<ModelClient> Create(const std::string& target) {
    Options o;
    o.target = target;
    return Create(o);
  }

  grpc::Status Predict(const modelserving::v1::PredictRequest& request,
                       modelserving::v1::PredictResponse* response) const;
  grpc::Status ListModels(modelserving::v1::ListModelsResponse* response) const;
  grpc::Status GetModelStatus(const std::string& model_name,
                              modelserving::v1::ModelStatus* response) const;

  grpc::Status SaveModel(const modelserving::v1::SaveModelRequest& request,
                         modelserving::v1::SaveModelResponse* response) const;
  grpc::Status LoadModel(const std::string& model_name, int64_t version,
                         modelserving::v1::LoadModelResponse* response) const;
  grpc::Status UnloadModel(const std::string& model_name,
                           modelserving::v1::UnloadModelResponse* response) const;
  // Streams the file at `path` after `header` (its sha256 and size_bytes are
  // filled in when empty) in `chunk_bytes` chunks.
  // `architecture_path`: optional architecture template (TorchScript) sent
  // before a STATE_DICT checkpoint, stored beside it. `calibration_path`: optional
  // calibration samples (a float32 .npy) for precision int8, stored beside it as
  // calibration.npy.
  grpc::Status Upload(const std::string& path, modelserving::v1::UploadHeader header,
                      modelserving::v1::UploadCheckpointResponse* response,
                      size_t chunk_bytes = 1 << 20, const std::string& architecture_path = "",
                      const std::string& calibration_path = "") const;
  // Writes the stored file to `out_path` (replaced atomically when complete) and
  // checks its sha256 against the header (DATA_LOSS on a mismatch).
  grpc::Status Download(const std::string& model_name, int64_t version, const std::string& out_path,
                        modelserving::v1::DownloadHeader* header) const;

  // The Open Inference Protocol's ModelInfer, as it is.
  grpc::Status ModelInfer(const inference::ModelInferRequest& request,
                          inference::ModelInferResponse* response) const;
  // Triton's system shared memory extension (admin calls; the server needs
  // --allow_shared_memory): region `name` is bytes [0, byte_size) of the POSIX
  // shared memory object `key`.
  grpc::Status RegisterSystemSharedMemory(const std::string& name, const std::string& key,
                                          uint64_t byte_size) const;
  // "" unregisters every region.
  grpc::Status UnregisterSystemSharedMemory(const std::string& name) const;

  modelserving::v1::ModelService::Stub* stub() const { return stub_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  void Prepare(grpc::ClientContext* context) const;

  Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<modelserving::v1::ModelService::Stub> stub_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> v2_stub_;

  // Predict as ModelInfer (Options::open_inference).
  grpc::Status PredictV2(const modelserving::v1::PredictRequest& request,
                         modelserving::v1::PredictResponse* response) const;
};

// A PredictRequest for `input` (data copied).
modelserving::v1::PredictRequest MakePredictRequest(const std::string& model_name,
                                                    const HostTensor& input, int top_k,
                                                    int64_t version = 0);
// The response's output as a HostTensor.
HostTensor OutputTensor(const modelserving::v1::PredictResponse& response);

// "NOT_FOUND", "UNAVAILABLE", ... ("OTHER" for a code gRPC does not define).
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace modelserver

#endif  // MODELSERVER_CLIENT_MODEL_CLIENT_H_
