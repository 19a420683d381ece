#include "server/service/model_service_impl.h"

#include "absl/strings/str_cat.h"
#include "server/service/status_mapping.h"
#include "server/service/tensor_proto.h"
#include "server/store/checkpoint_store.h"
#include "server/util/status_macros.h"

namespace modelserver {

namespace v1 = modelserving::v1;

namespace {
grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}
}  // namespace

void ToProto(const ModelStatusInfo& info, v1::ModelStatus* proto) {
  proto->set_model_name(info.model_name);
  proto->set_state(static_cast<v1::ModelState>(info.state));
  proto->set_serving_version(info.serving_version);
  proto->mutable_store_versions()->Assign(info.store_versions.begin(), info.store_versions.end());
  proto->set_format(static_cast<v1::CheckpointFormat>(info.format));
  proto->set_architecture(info.architecture);
  proto->set_device(info.device);
  proto->set_last_error(info.last_error);
}

absl::Status ModelServiceImpl::DoPredict(const v1::PredictRequest& request,
                                         v1::PredictResponse* response) {
  if (shutting_down_.load()) return absl::UnavailableError("server is shutting down");
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(request.model_name()));
  if (request.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", request.version(), " is negative, expected 0 (serving) or >= 1"));
  }
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", request.top_k(), " is negative, expected 0 (none) or more"));
  }
  if (!request.has_input()) return absl::InvalidArgumentError("input tensor is missing");
  ASSIGN_OR_RETURN(ModelRegistry::Handle handle,
                   registry_->Get(request.model_name(), request.version()));
  ASSIGN_OR_RETURN(HostTensor input, FromProto(request.input()));
  RETURN_IF_ERROR(handle.model->ValidateInput(input.dtype, input.shape));
  ASSIGN_OR_RETURN(HostTensor output, handle.model->Forward(input));
  if (request.top_k() > 0) {
    ASSIGN_OR_RETURN(auto top, TopK(output, request.top_k()));
    for (const auto& sample : top) {
      v1::TopK* t = response->add_top_k();
      for (const auto& [index, p] : sample) {
        v1::Class* c = t->add_classes();
        c->set_index(index);
        c->set_probability(p);
      }
    }
  }
  response->set_model_name(request.model_name());
  response->set_version(handle.version);
  ToProto(std::move(output), response->mutable_output());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ModelServiceImpl::Predict(grpc::CallbackServerContext* context,
                                                    const v1::PredictRequest* request,
                                                    v1::PredictResponse* response) {
  return Finish(context, DoPredict(*request, response));
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* /*request*/,
                                                       v1::ListModelsResponse* response) {
  auto models = registry_->List();
  if (models.ok()) {
    for (const ModelStatusInfo& m : *models) ToProto(m, response->add_models());
  }
  return Finish(context, models.status());
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModelStatus(grpc::CallbackServerContext* context,
                                                           const v1::GetModelStatusRequest* request,
                                                           v1::ModelStatus* response) {
  auto status = registry_->Status(request->model_name());
  if (status.ok()) ToProto(*status, response);
  return Finish(context, status.status());
}

}  // namespace modelserver
