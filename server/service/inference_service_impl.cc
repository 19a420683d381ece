#include "server/service/inference_service_impl.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/service/oip_convert.h"
#include "server/service/rpc.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using Rpc = ModelServiceImpl::Rpc;

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const Rpc& rpc,
                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  rpc.Finish(reactor, status);
  return reactor;
}

const char* RepositoryState(ModelState s) {
  switch (s) {
    case ModelState::kReady:
      return "READY";
    case ModelState::kLoading:
      return "LOADING";
    default:
      return "UNAVAILABLE";
  }
}

}  // namespace

absl::StatusOr<ModelHandle> InferenceServiceImpl::Serving(const std::string& name,
                                                          const std::string& version) const {
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(name));
  ASSIGN_OR_RETURN(const int64_t v, ParseModelVersion(version));
  return registry_->Get(name, v);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerLive(
    grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Answer(context, Rpc{service_, "ServerLive"}, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
    inference::ServerReadyResponse* response) {
  bool ready = !service_->shutting_down_.load();
  for (const std::string& m : options_.startup_models) ready = ready && registry_->Get(m, 0).ok();
  response->set_ready(ready);
  return Answer(context, Rpc{service_, "ServerReady"}, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelReady(
    grpc::CallbackServerContext* context, const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  Rpc rpc{service_, "ModelReady"};
  absl::StatusOr<ModelHandle> h = Serving(request->name(), request->version());
  // A model the server knows but that does not serve (loading, failed, another
  // version) is not ready; an unknown one is NOT_FOUND.
  absl::Status status = h.status();
  if (h.ok() || h.status().code() == absl::StatusCode::kFailedPrecondition ||
      (h.status().code() == absl::StatusCode::kNotFound &&
       registry_->Status(request->name()).ok())) {
    status = absl::OkStatus();
    rpc.SetModel(request->name());
  }
  response->set_ready(h.ok());
  return Answer(context, rpc, status);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("model-server");
  response->set_version(options_.server_version);
  response->add_extensions("classification");
  response->add_extensions("model_repository");
  return Answer(context, Rpc{service_, "ServerMetadata"}, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  Rpc rpc{service_, "ModelMetadata"};
  absl::StatusOr<ModelHandle> h = Serving(request->name(), request->version());
  if (!h.ok()) return Answer(context, rpc, h.status());
  rpc.SetModel(request->name());
  response->set_name(request->name());
  response->add_versions(absl::StrCat(h->version));
  response->set_platform("pytorch_libtorch");
  auto* in = response->add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  // [-1, C, -1, -1] where the model knows its channels (its warm-up shape), else
  // one variable dimension per known rank, else [-1].
  const std::vector<int64_t> warm = h->model->WarmupShape();
  if (warm.size() == 4) {
    for (int64_t d : {int64_t{-1}, warm[1], int64_t{-1}, int64_t{-1}}) in->add_shape(d);
  } else {
    in->add_shape(-1);
  }
  auto* out = response->add_outputs();
  out->set_name("output");
  out->set_datatype("FP32");
  for (int i = 0; i < std::max(1, h->model->OutputRank()); ++i) out->add_shape(-1);
  return Answer(context, rpc, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelInfer(
    grpc::CallbackServerContext* context, const inference::ModelInferRequest* request,
    inference::ModelInferResponse* response) {
  // An unknown model or version (or a bad name) is answered before any input is
  // looked at.
  if (absl::StatusOr<ModelHandle> h = Serving(request->model_name(), request->model_version());
      !h.ok() && (h.status().code() == absl::StatusCode::kNotFound ||
                  h.status().code() == absl::StatusCode::kInvalidArgument)) {
    return Answer(context, Rpc{service_, "ModelInfer"}, h.status());
  }
  // The converted request lives until the call finishes (image decoding reads
  // its images after this returns): the Rpc's convert function holds it.
  auto predict = std::make_shared<v1::PredictRequest>();
  const absl::Status parsed = ToPredictRequest(*request, predict.get());
  auto predicted = std::make_shared<v1::PredictResponse>();
  Rpc rpc{service_, "ModelInfer"};
  // gRPC keeps `request` and `response` until the reactor finishes.
  rpc.convert = [request, response, predicted, predict] {
    return FromPredictResponse(*request, *predicted, response);
  };
  const int64_t bytes =
      static_cast<int64_t>(request->ByteSizeLong()) + static_cast<int64_t>(predict->ByteSizeLong());
  return service_->PredictVia(context, *predict, parsed, predicted.get(), std::move(rpc), bytes);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  Rpc rpc{service_, "RepositoryIndex"};
  absl::StatusOr<std::vector<ModelStatusInfo>> models = registry_->List();
  if (models.ok()) {
    for (const ModelStatusInfo& m : *models) {
      if (request->ready() && m.state != ModelState::kReady) continue;
      auto* index = response->add_models();
      index->set_name(m.model_name);
      const int64_t v = m.serving_version > 0      ? m.serving_version
                        : m.store_versions.empty() ? 0
                                                   : m.store_versions.back();
      if (v > 0) index->set_version(absl::StrCat(v));
      index->set_state(RepositoryState(m.state));
      index->set_reason(m.last_error);
    }
  }
  return Answer(context, rpc, models.status());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  Rpc rpc{service_, "RepositoryModelLoad"};
  if (absl::Status auth = service_->auth_.Check(*context); !auth.ok()) {
    return Answer(context, rpc, auth);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // The version the store's policy names (its pin, else the newest); pins stay.
  registry_->LoadAsync(request->model_name(), 0,
                       [reactor, rpc, name = request->model_name()](absl::Status s) mutable {
                         if (s.ok()) rpc.SetModel(name);
                         rpc.Finish(reactor, s);
                       });
  return reactor;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  Rpc rpc{service_, "RepositoryModelUnload"};
  if (absl::Status auth = service_->auth_.Check(*context); !auth.ok()) {
    return Answer(context, rpc, auth);
  }
  absl::Status s = registry_->Unload(request->model_name());
  if (s.ok()) rpc.SetModel(request->model_name());
  return Answer(context, rpc, s);
}

}  // namespace modelserver
