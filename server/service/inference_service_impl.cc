#include "server/service/inference_service_impl.h"

#include <algorithm>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/service/oip_convert.h"
#include "server/service/rpc.h"
#include "server/service/stream_infer.h"
#include "server/util/logging.h"

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
  response->add_extensions("model_configuration");
  response->add_extensions("statistics");
  if (options_.shared_memory != nullptr) response->add_extensions("system_shared_memory");
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
  // Every output of the last forward pass (the warm-up at load, when the model
  // has one), by name; the first's rank where known.
  const std::vector<std::string> names = h->model->OutputNames();
  for (size_t o = 0; o < names.size(); ++o) {
    auto* out = response->add_outputs();
    out->set_name(names[o]);
    out->set_datatype("FP32");
    const int rank = o == 0 ? std::max(1, h->model->OutputRank()) : 1;
    for (int i = 0; i < rank; ++i) out->add_shape(-1);
  }
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
  // Inputs in shared memory are read into a copy of the request (it names
  // regions, so it carries no tensor data of its own).
  std::shared_ptr<const inference::ModelInferRequest> shared_request;
  if (UsesSharedMemory(*request)) {
    absl::StatusOr<std::shared_ptr<const inference::ModelInferRequest>> resolved =
        WithSharedMemoryInputs(*context, *request);
    if (!resolved.ok()) return Answer(context, Rpc{service_, "ModelInfer"}, resolved.status());
    shared_request = *std::move(resolved);
    request = shared_request.get();
  }
  // The converted request lives until the call finishes (image decoding reads
  // its images after this returns): the Rpc's convert function holds it.
  auto predict = std::make_shared<v1::PredictRequest>();
  const absl::Status parsed = ToPredictRequest(*request, predict.get());
  auto predicted = std::make_shared<v1::PredictResponse>();
  Rpc rpc{service_, "ModelInfer"};
  // gRPC keeps `request` and `response` until the reactor finishes;
  // `shared_request` lives as long as the convert function.
  rpc.convert = [request, shared_request, response, predicted, predict,
                 regions = options_.shared_memory] {
    RETURN_IF_ERROR(FromPredictResponse(*request, *predicted, response));
    if (shared_request == nullptr) return absl::OkStatus();
    return WriteSharedMemoryOutputs(*request, *regions, response);
  };
  const int64_t bytes =
      static_cast<int64_t>(request->ByteSizeLong()) + static_cast<int64_t>(predict->ByteSizeLong());
  return service_->PredictVia(context, *predict, parsed, predicted.get(), std::move(rpc), bytes);
}

absl::Status InferenceServiceImpl::CheckSharedMemory(
    const grpc::CallbackServerContext& context) const {
  if (options_.shared_memory == nullptr) {
    return absl::FailedPreconditionError(
        "system shared memory is off; start the server with --allow_shared_memory to use it");
  }
  return service_->auth_.Check(context);
}

absl::StatusOr<std::shared_ptr<const inference::ModelInferRequest>>
InferenceServiceImpl::WithSharedMemoryInputs(const grpc::CallbackServerContext& context,
                                             const inference::ModelInferRequest& request) const {
  RETURN_IF_ERROR(CheckSharedMemory(context));
  auto resolved = std::make_shared<inference::ModelInferRequest>(request);
  RETURN_IF_ERROR(
      ReadSharedMemoryInputs(*options_.shared_memory, options_.max_message_bytes, resolved.get()));
  return resolved;
}

grpc::ServerUnaryReactor* InferenceServiceImpl::SystemSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::SystemSharedMemoryStatusRequest* request,
    inference::SystemSharedMemoryStatusResponse* response) {
  Rpc rpc{service_, "SystemSharedMemoryStatus"};
  if (absl::Status s = CheckSharedMemory(*context); !s.ok()) return Answer(context, rpc, s);
  absl::StatusOr<std::vector<SharedMemoryRegions::Region>> regions =
      options_.shared_memory->Status(request->name());
  if (regions.ok()) {
    for (const SharedMemoryRegions::Region& r : *regions) {
      auto& status = (*response->mutable_regions())[r.name];
      status.set_name(r.name);
      status.set_key(r.key);
      status.set_offset(r.offset);
      status.set_byte_size(r.byte_size);
    }
  }
  return Answer(context, rpc, regions.status());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::SystemSharedMemoryRegister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryRegisterRequest* request,
    inference::SystemSharedMemoryRegisterResponse*) {
  Rpc rpc{service_, "SystemSharedMemoryRegister"};
  absl::Status s = CheckSharedMemory(*context);
  if (s.ok()) {
    s = options_.shared_memory->Register(request->name(), request->key(), request->offset(),
                                         request->byte_size());
  }
  if (s.ok())
    LOG_INFO("shared memory region '", request->name(), "' registered: ", request->key(), " [",
             request->offset(), ", +", request->byte_size(), ")");
  return Answer(context, rpc, s);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::SystemSharedMemoryUnregister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryUnregisterRequest* request,
    inference::SystemSharedMemoryUnregisterResponse*) {
  Rpc rpc{service_, "SystemSharedMemoryUnregister"};
  absl::Status s = CheckSharedMemory(*context);
  if (s.ok() && !request->name().empty()) {
    s = SharedMemoryRegions::ValidateName(request->name());
  }
  if (s.ok()) options_.shared_memory->Unregister(request->name());
  return Answer(context, rpc, s);
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

namespace {

inference::DataType ConfigType(const std::string& datatype) {
  if (datatype == "FP32") return inference::TYPE_FP32;
  if (datatype == "FP16") return inference::TYPE_FP16;
  if (datatype == "BF16") return inference::TYPE_BF16;
  if (datatype == "FP64") return inference::TYPE_FP64;
  return inference::TYPE_INVALID;
}

void Fill(const ModelStatistics::Duration& d, inference::StatisticDuration* out) {
  out->set_count(d.count);
  out->set_ns(d.ns);
}

}  // namespace

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
InferenceServiceImpl::ModelStreamInfer(grpc::CallbackServerContext* context) {
  if (stub_ == nullptr) {
    // Not wired (a test without set_channel): refuse rather than crash.
    class Refused : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                                   inference::ModelStreamInferResponse> {
     public:
      Refused() { Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "streaming is not set up")); }
      void OnDone() override { delete this; }
    };
    return new Refused();
  }
  // A stream from a peer that passes the admin check is vouched for on its
  // calls (which come from the in-process channel), so its shared memory works.
  const bool vouch = service_->auth_.Check(*context).ok();
  return new StreamInferReactor(context, stub_,
                                vouch ? service_->auth_.gateway_secret() : std::string());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelConfig(
    grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  Rpc rpc{service_, "ModelConfig"};
  absl::StatusOr<ModelHandle> h = Serving(request->name(), request->version());
  if (!h.ok()) return Answer(context, rpc, h.status());
  absl::StatusOr<ModelStatusInfo> status = registry_->Status(request->name());
  if (!status.ok()) return Answer(context, rpc, status.status());
  rpc.SetModel(request->name());
  // The same shapes as ModelMetadata, without the batch dimension.
  const std::vector<int64_t> warm = h->model->WarmupShape();
  const BatchQueue::Options& batching = registry_->batching();
  const bool batched = batching.max_batch_size > 1;
  inference::ModelConfig* c = response->mutable_config();
  c->set_name(request->name());
  c->set_platform("pytorch_libtorch");
  c->set_backend("pytorch");
  c->set_max_batch_size(batched ? static_cast<int32_t>(batching.max_batch_size) : 0);
  if (status->pinned_version > 0) {
    c->mutable_version_policy()->mutable_specific()->add_versions(status->pinned_version);
  } else {
    c->mutable_version_policy()->mutable_latest()->set_num_versions(1);
  }
  auto* in = c->add_input();
  in->set_name("input");
  in->set_data_type(ConfigType("FP32"));
  if (warm.size() == 4) {
    for (int64_t d : {warm[1], int64_t{-1}, int64_t{-1}}) in->add_dims(d);
  } else {
    in->add_dims(-1);
  }
  if (!batched) in->mutable_dims()->Add(-1);  // then the batch dimension is part of dims
  const std::vector<std::string> names = h->model->OutputNames();
  for (size_t o = 0; o < names.size(); ++o) {
    auto* out = c->add_output();
    out->set_name(names[o]);
    out->set_data_type(ConfigType("FP32"));
    const int rank = o == 0 ? std::max(2, h->model->OutputRank()) : 2;
    for (int i = 1; i < rank; ++i) out->add_dims(-1);
    if (o == 0 && h->labels != nullptr) out->set_label_filename(CheckpointStore::kLabelsFile);
  }
  auto* group = c->add_instance_group();
  group->set_name(absl::StrCat(request->name(), "_0"));
  group->set_count(batching.num_workers);
  const bool gpu = absl::StrContains(status->device, "cuda");
  group->set_kind(gpu ? inference::ModelInstanceGroup::KIND_GPU
                      : inference::ModelInstanceGroup::KIND_CPU);
  for (absl::string_view d : absl::StrSplit(status->device, ',')) {
    int index = 0;
    if (gpu && absl::ConsumePrefix(&d, "cuda:") && absl::SimpleAtoi(d, &index)) {
      group->add_gpus(index);
    }
  }
  c->set_default_model_filename(CheckpointStore::FileNameFor(status->format));
  if (batched) {
    c->mutable_dynamic_batching()->add_preferred_batch_size(
        static_cast<int32_t>(batching.max_batch_size));
    c->mutable_dynamic_batching()->set_max_queue_delay_microseconds(
        static_cast<uint64_t>(absl::ToInt64Microseconds(batching.batch_timeout)));
  }
  return Answer(context, rpc, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  Rpc rpc{service_, "ModelStatistics"};
  std::vector<std::string> names;
  if (request->name().empty()) {
    absl::StatusOr<std::vector<ModelStatusInfo>> models = registry_->List();
    if (!models.ok()) return Answer(context, rpc, models.status());
    for (const ModelStatusInfo& m : *models) names.push_back(m.model_name);
  } else {
    if (absl::Status s = CheckpointStore::ValidateModelName(request->name()); !s.ok()) {
      return Answer(context, rpc, s);
    }
    if (!registry_->Status(request->name()).ok()) {
      return Answer(context, rpc,
                    absl::NotFoundError(absl::StrCat("model '", request->name(), "' is unknown")));
    }
    names.push_back(request->name());
    rpc.SetModel(request->name());
  }
  absl::StatusOr<int64_t> wanted = ParseModelVersion(request->version());
  if (!wanted.ok()) return Answer(context, rpc, wanted.status());
  for (const std::string& name : names) {
    std::vector<ModelStatistics::Version> versions = registry_->statistics().Get(name);
    // The serving version appears even before its first inference.
    absl::StatusOr<ModelStatusInfo> status = registry_->Status(name);
    if (status.ok() && status->serving_version > 0 &&
        std::none_of(versions.begin(), versions.end(), [&](const ModelStatistics::Version& v) {
          return v.version == status->serving_version;
        })) {
      ModelStatistics::Version empty;
      empty.version = status->serving_version;
      versions.push_back(empty);
    }
    for (const ModelStatistics::Version& v : versions) {
      if (*wanted != 0 && v.version != *wanted) continue;
      auto* m = response->add_model_stats();
      m->set_name(name);
      m->set_version(absl::StrCat(v.version));
      m->set_last_inference(v.last_inference_ms);
      m->set_inference_count(v.inference_count);
      m->set_execution_count(v.execution_count);
      auto* s = m->mutable_inference_stats();
      Fill(v.success, s->mutable_success());
      Fill(v.fail, s->mutable_fail());
      Fill(v.queue, s->mutable_queue());
      Fill(v.compute_input, s->mutable_compute_input());
      Fill(v.compute_infer, s->mutable_compute_infer());
      Fill(v.compute_output, s->mutable_compute_output());
      for (const auto& [size, b] : v.batch_sizes) {
        auto* bs = m->add_batch_stats();
        bs->set_batch_size(static_cast<uint64_t>(size));
        Fill(b.input, bs->mutable_compute_input());
        Fill(b.infer, bs->mutable_compute_infer());
        Fill(b.output, bs->mutable_compute_output());
      }
    }
  }
  return Answer(context, rpc, absl::OkStatus());
}

}  // namespace modelserver
