#include "server/service/model_service_impl.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/dtype_convert.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/image/preprocess.h"
#include "server/model/precision.h"
#include "server/service/rpc.h"
#include "server/service/status_mapping.h"
#include "server/service/tensor_proto.h"
#include "server/store/checkpoint_store.h"

namespace modelserver {

namespace v1 = modelserving::v1;

using Rpc = ModelServiceImpl::Rpc;

namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context, const Rpc& rpc,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  rpc.Finish(reactor, status);
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
  proto->set_pinned_version(info.pinned_version);
  proto->set_precision(info.precision);
  proto->set_memory_format(info.memory_format);
  proto->set_parameter_bytes(info.parameter_bytes);
  proto->set_int8_calibration_samples(info.int8_samples);
  proto->set_int8_top1_agreement(info.int8_top1_agreement);
  proto->set_int8_worst_cosine(info.int8_worst_cosine);
}

namespace {

absl::Time ToAbslTime(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(t);
}

// The outputs a request asked for, in its order: `names` (empty: the first
// output) or, with `all`, every one. INVALID_ARGUMENT naming the model's outputs
// for a name it does not give.
absl::StatusOr<std::vector<NamedTensor>> ChooseOutputs(const std::string& model_name,
                                                       const std::vector<std::string>& names,
                                                       bool all, std::vector<NamedTensor> outputs) {
  if (outputs.empty()) return absl::InternalError("the model gave no output");
  if (all) return outputs;
  if (names.empty()) {
    outputs.resize(1);
    return outputs;
  }
  std::vector<NamedTensor> chosen;
  for (const std::string& name : names) {
    auto it = std::find_if(outputs.begin(), outputs.end(),
                           [&](const NamedTensor& o) { return o.name == name; });
    if (it == outputs.end()) {
      std::vector<std::string> given;
      for (const NamedTensor& o : outputs) given.push_back(absl::StrCat("'", o.name, "'"));
      return absl::InvalidArgumentError(absl::StrCat("model '", model_name, "' has no output '",
                                                     name, "'; its outputs are ",
                                                     absl::StrJoin(given, ", ")));
    }
    chosen.push_back(std::move(*it));  // names are unique (checked with the request)
  }
  return chosen;
}

// Fills the response from a batch's output rows for this request; a float32
// output goes back in the request's floating dtype (`wire`).
absl::Status FillResponse(const std::string& model_name, int top_k, bool unbatched, DType wire,
                          const std::vector<std::string>* labels,
                          const std::vector<std::string>& names, bool all, BatchTask::Result result,
                          v1::PredictResponse* response) {
  ASSIGN_OR_RETURN(std::vector<NamedTensor> outputs,
                   ChooseOutputs(model_name, names, all, std::move(result.outputs)));
  for (NamedTensor& o : outputs) {
    if (o.tensor.dtype == DType::kFloat32 && wire != DType::kFloat32) {
      ASSIGN_OR_RETURN(o.tensor, ConvertFloat(o.tensor, wire));
    }
  }
  HostTensor& first = outputs.front().tensor;
  if (top_k > 0) {
    absl::StatusOr<std::vector<std::vector<std::pair<int64_t, float>>>> top = TopK(first, top_k);
    if (!top.ok() && outputs.front().name != "output") {
      return absl::Status(
          top.status().code(),
          absl::StrCat("top_k of output '", outputs.front().name, "': ", top.status().message()));
    }
    if (!top.ok()) return top.status();
    for (const auto& sample : *top) {
      v1::TopK* t = response->add_top_k();
      for (const auto& [index, p] : sample) {
        v1::Class* c = t->add_classes();
        c->set_index(index);
        c->set_probability(p);
        if (labels != nullptr && index >= 0 && static_cast<size_t>(index) < labels->size()) {
          c->set_label((*labels)[static_cast<size_t>(index)]);
        }
      }
    }
  }
  for (NamedTensor& o : outputs) {
    if (unbatched && !o.tensor.shape.empty()) o.tensor.shape.erase(o.tensor.shape.begin());
  }
  response->set_model_name(model_name);
  response->set_version(result.version);
  response->set_output_name(outputs.front().name);
  ToProto(std::move(first), response->mutable_output());
  for (size_t i = 1; i < outputs.size(); ++i) {
    v1::NamedTensor* more = response->add_more_outputs();
    more->set_name(outputs[i].name);
    ToProto(std::move(outputs[i].tensor), more->mutable_tensor());
  }
  return absl::OkStatus();
}

// The request's output choice, checked before anything is computed.
absl::Status CheckOutputNames(const v1::PredictRequest& request) {
  if (request.all_outputs() && request.output_names_size() > 0) {
    return absl::InvalidArgumentError(
        "the request sets both all_outputs and output_names; send one");
  }
  if (static_cast<size_t>(request.output_names_size()) > kMaxModelOutputs) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request names ", request.output_names_size(),
                     " outputs; a model gives at most ", kMaxModelOutputs));
  }
  std::set<std::string> seen;
  for (const std::string& name : request.output_names()) {
    if (name.empty() || name.size() > kMaxOutputNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("output names are 1 to ", kMaxOutputNameBytes, " bytes, not ", name.size()));
    }
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request names output '", name, "' twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ModelServiceImpl::ForwardBytes(const Model& model,
                                                       const HostTensor& input) const {
  const int64_t estimate = model.ForwardBytes(input.shape);
  if (estimate > 0) return estimate;
  if (input.NumElements() > options_.max_input_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", ShapeString(input.shape), " has ", input.NumElements(),
                     " elements, over the limit of ", options_.max_input_elements,
                     " (--max_input_elements) for a model whose memory use cannot be estimated"));
  }
  return static_cast<int64_t>(input.data.size()) * kUnknownForwardBytesPerInputByte;
}

absl::Status ModelServiceImpl::StartPredict(grpc::CallbackServerContext* context,
                                            const v1::PredictRequest& request,
                                            v1::PredictResponse* response,
                                            grpc::ServerUnaryReactor* reactor, Rpc* rpc) {
  if (shutting_down_.load()) return absl::UnavailableError("server is shutting down");
  RETURN_IF_ERROR(CheckpointStore::ValidateModelName(request.model_name()));
  if (request.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", request.version(), " is negative, expected 0 (serving) or >= 1"));
  }
  ASSIGN_OR_RETURN(ModelHandle handle, registry_->Get(request.model_name(), request.version()));
  rpc->SetModel(request.model_name());
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", request.top_k(), " is negative, expected 0 (none) or more"));
  }
  RETURN_IF_ERROR(CheckOutputNames(request));
  if (request.top_k() > 0 && request.output_names_size() == 0 && handle.model->OutputRank() > 0 &&
      handle.model->OutputRank() != 2) {
    return absl::FailedPreconditionError(
        absl::StrCat("top_k needs a [N,C] output, and model '", request.model_name(),
                     "' gives outputs of rank ", handle.model->OutputRank(), "; ask with top_k 0"));
  }
  if (request.images_size() > 0) {
    if (request.has_input()) {
      return absl::InvalidArgumentError("the request has both input and images; send one");
    }
    return StartImagePredict(context, request, std::move(handle), response, reactor, rpc);
  }
  if (!request.has_input()) {
    return absl::InvalidArgumentError("the request has neither an input tensor nor images");
  }
  ASSIGN_OR_RETURN(HostTensor input, FromProto(request.input()));
  // float64 (numpy's default), float16 and bfloat16 inputs are computed as
  // float32 -- the model converts to its own precision -- and answered in kind.
  const DType wire = IsWireFloat(input.dtype) ? input.dtype : DType::kFloat32;
  if (wire != DType::kFloat32) {
    ASSIGN_OR_RETURN(input, ConvertFloat(input, DType::kFloat32));
  }
  RETURN_IF_ERROR(handle.model->ValidateInput(input.dtype, input.shape));
  const bool unbatched = handle.model->IsUnbatched(input.shape);
  if (unbatched) input.shape.insert(input.shape.begin(), 1);
  ASSIGN_OR_RETURN(const int64_t forward_bytes, ForwardBytes(*handle.model, input));
  return registry_->Enqueue(request.model_name(),
                            MakeTask(context, request, handle, std::move(input), forward_bytes,
                                     unbatched, wire, response, reactor, *rpc));
}

BatchTask ModelServiceImpl::MakeTask(grpc::CallbackServerContext* context,
                                     const v1::PredictRequest& request, const ModelHandle& handle,
                                     HostTensor input, int64_t forward_bytes, bool unbatched,
                                     DType wire, v1::PredictResponse* response,
                                     grpc::ServerUnaryReactor* reactor, const Rpc& rpc) const {
  BatchTask task;
  task.input = std::move(input);
  task.forward_bytes = forward_bytes;
  task.version = request.version();
  task.deadline = ToAbslTime(context->deadline());
  task.is_cancelled = [context] { return context->IsCancelled(); };
  task.done = [reactor, response, unbatched, wire, top_k = request.top_k(), labels = handle.labels,
               name = request.model_name(),
               names = std::vector<std::string>(request.output_names().begin(),
                                                request.output_names().end()),
               all = request.all_outputs(), rpc](absl::StatusOr<BatchTask::Result> result) {
    absl::Status status = result.status();
    if (result.ok()) {
      status = FillResponse(name, top_k, unbatched, wire, labels.get(), names, all,
                            *std::move(result), response);
    }
    rpc.Finish(reactor, status);
  };
  return task;
}

namespace {

// One Predict with images: its decode tasks share it; the last to finish queues
// the batch task or answers the error of the lowest-numbered bad image.
struct ImageJob {
  BatchTask task;
  std::function<absl::Status(BatchTask)> enqueue;
  std::function<void(absl::Status)> fail;
  std::atomic<int64_t> remaining{0};
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  int64_t error_index ABSL_GUARDED_BY(mu) = -1;
  absl::Status error ABSL_GUARDED_BY(mu);

  void Fail(int64_t index, absl::Status status) {
    absl::MutexLock lock(&mu);
    failed.store(true);
    if (error_index < 0 || index < error_index) {
      error_index = index;
      error = std::move(status);
    }
  }
  void OneDone() {
    if (remaining.fetch_sub(1) != 1) return;
    absl::Status status;
    {
      absl::MutexLock lock(&mu);
      status = error;
    }
    if (status.ok()) status = enqueue(std::move(task));
    if (!status.ok()) fail(std::move(status));
  }
};

// Decodes image `index` into its slice of the job's input tensor.
absl::Status DecodeInto(const std::string& bytes, int64_t index, const ImagePreprocess& p,
                        const DecodeLimits& limits, float* out) {
  absl::StatusOr<RgbImage> image = DecodeImage(bytes, limits);
  absl::Status status = image.status();
  if (status.ok()) status = TransformImage(*image, p, out);
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("image ", index, ": ", status.message()));
}

}  // namespace

absl::Status ModelServiceImpl::StartImagePredict(grpc::CallbackServerContext* context,
                                                 const v1::PredictRequest& request,
                                                 ModelHandle handle, v1::PredictResponse* response,
                                                 grpc::ServerUnaryReactor* reactor, Rpc* rpc) {
  if (options_.image_pool == nullptr) {
    return absl::UnimplementedError("this server does not take images");
  }
  const std::shared_ptr<const ImagePreprocess> pre =
      handle.preprocess != nullptr ? handle.preprocess : std::make_shared<ImagePreprocess>();
  const int64_t n = request.images_size();
  if (static_cast<size_t>(n) > options_.image_pool->max_queued()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request has ", n, " images, more than the decoding queue holds (",
                     options_.image_pool->max_queued(), ", --max_queued_images)"));
  }
  HostTensor input;
  input.dtype = DType::kFloat32;
  input.shape = pre->OutputShape();
  input.shape.insert(input.shape.begin(), n);
  if (absl::Status s = handle.model->ValidateInput(input.dtype, input.shape); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("images become ", ShapeString(input.shape), " (preprocess ",
                                     PreprocessJson(*pre), "), which model '", request.model_name(),
                                     "' does not take: ", s.message()));
  }
  const int64_t per_image = input.NumElements() / n;
  // The decoded tensor is held like request bytes: reserved before allocating.
  const int64_t tensor_bytes = input.NumElements() * 4;
  RETURN_IF_ERROR(Hold(rpc, tensor_bytes,
                       absl::StrCat(n, " images (", rpc->bytes + tensor_bytes, " bytes decoded)")));
  input.data.resize(static_cast<size_t>(tensor_bytes));
  ASSIGN_OR_RETURN(const int64_t forward_bytes, ForwardBytes(*handle.model, input));

  auto job = std::make_shared<ImageJob>();
  job->remaining.store(n);
  job->task = MakeTask(context, request, handle, std::move(input), forward_bytes,
                       /*unbatched=*/false, DType::kFloat32, response, reactor, *rpc);
  job->enqueue = [registry = registry_, name = request.model_name()](BatchTask task) {
    return registry->Enqueue(name, std::move(task));
  };
  job->fail = [reactor, rpc = *rpc](absl::Status status) { rpc.Finish(reactor, status); };
  float* base = reinterpret_cast<float*>(job->task.input.data.data());
  std::vector<std::function<void()>> tasks;
  tasks.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    tasks.push_back([job, i, pre, context, bytes = &request.images(static_cast<int>(i)),
                     out = base + i * per_image, limits = options_.image_limits, metrics = metrics_,
                     model = request.model_name()] {
      if (!job->failed.load()) {
        const absl::Time start = absl::Now();
        absl::Status status;
        if (context->IsCancelled()) {
          status = absl::CancelledError("the client cancelled the request");
        } else {
          try {
            status = DecodeInto(*bytes, i, *pre, limits, out);
          } catch (const std::bad_alloc&) {
            status = absl::ResourceExhaustedError(
                absl::StrCat("image ", i, ": out of memory while decoding"));
          } catch (const std::exception& e) {
            status = absl::InternalError(absl::StrCat("image ", i, ": ", e.what()));
          }
        }
        if (!status.ok()) {
          job->Fail(i, std::move(status));
        } else if (metrics != nullptr) {
          metrics->RecordPreprocess(model, absl::ToDoubleSeconds(absl::Now() - start));
        }
      }
      job->OneDone();
    });
  }
  if (!options_.image_pool->PostAll(std::move(tasks))) {
    return absl::ResourceExhaustedError(absl::StrCat("the image decoding queue is full (",
                                                     options_.image_pool->max_queued(),
                                                     " images, --max_queued_images); retry later"));
  }
  return absl::OkStatus();
}

absl::Status ModelServiceImpl::Hold(Rpc* rpc, int64_t bytes, const std::string& what) {
  rpc->held_bytes = &inflight_request_bytes_;
  rpc->bytes += bytes;
  const int64_t held = inflight_request_bytes_.fetch_add(bytes) + bytes;
  if (options_.max_inflight_request_bytes <= 0 || held <= options_.max_inflight_request_bytes) {
    return absl::OkStatus();
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "the server holds ", held - rpc->bytes, " bytes of Predict requests; this one's ", what,
      " would pass the limit of ", options_.max_inflight_request_bytes,
      " (--max_inflight_request_bytes); retry later"));
}

bool ModelServiceImpl::WaitIdle(absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (inflight_.load() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

grpc::ServerUnaryReactor* ModelServiceImpl::Predict(grpc::CallbackServerContext* context,
                                                    const v1::PredictRequest* request,
                                                    v1::PredictResponse* response) {
  return PredictVia(context, *request, absl::OkStatus(), response, Rpc{this, "Predict"},
                    static_cast<int64_t>(request->ByteSizeLong()));
}

grpc::ServerUnaryReactor* ModelServiceImpl::PredictVia(grpc::CallbackServerContext* context,
                                                       const v1::PredictRequest& request,
                                                       const absl::Status& parsed,
                                                       v1::PredictResponse* response, Rpc rpc,
                                                       int64_t request_bytes) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!parsed.ok()) {
    rpc.Finish(reactor, parsed);
    return reactor;
  }
  // Requests held in memory are budgeted: past the limit, answer at once (the
  // request's memory goes as soon as it is answered).
  if (absl::Status held = Hold(&rpc, request_bytes, absl::StrCat(request_bytes, " bytes"));
      !held.ok()) {
    rpc.Finish(reactor, held);
    return reactor;
  }
  // On success the batch worker finishes the reactor; this thread returns at once.
  absl::Status status = StartPredict(context, request, response, reactor, &rpc);
  if (!status.ok()) rpc.Finish(reactor, status);
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest* /*request*/,
                                                       v1::ListModelsResponse* response) {
  auto models = registry_->List();
  if (models.ok()) {
    for (const ModelStatusInfo& m : *models) ToProto(m, response->add_models());
  }
  return FinishNow(context, Rpc{this, "ListModels"}, models.status());
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModelStatus(grpc::CallbackServerContext* context,
                                                           const v1::GetModelStatusRequest* request,
                                                           v1::ModelStatus* response) {
  auto status = registry_->Status(request->model_name());
  Rpc rpc{this, "GetModelStatus"};
  if (status.ok()) {
    ToProto(*status, response);
    rpc.SetModel(request->model_name());
  }
  return FinishNow(context, rpc, status.status());
}

}  // namespace modelserver

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;

absl::Status ValidateName(const std::string& name) {
  return CheckpointStore::ValidateModelName(name);
}

// UploadCheckpoint: header first, then chunks streamed into a staging version;
// published only when the stream ends complete and verified. A client that goes
// away leaves nothing behind (the pending version removes its staging directory).
class UploadReactor : public grpc::ServerReadReactor<v1::UploadCheckpointRequest> {
 public:
  UploadReactor(grpc::CallbackServerContext* context, const CheckpointStore* store,
                const ModelRegistry* registry, TaskRunner* committer, uint64_t max_bytes,
                v1::UploadCheckpointResponse* response, Rpc rpc, const absl::Status& auth)
      : context_(context),
        store_(store),
        registry_(registry),
        committer_(committer),
        max_bytes_(max_bytes),
        response_(response),
        rpc_(std::move(rpc)) {
    if (!auth.ok()) {
      Fail(auth);
      return;
    }
    StartRead(&request_);
  }

  // No exception leaves a gRPC thread: an allocation failure while receiving
  // ends the upload with RESOURCE_EXHAUSTED and removes what was staged.
  void OnReadDone(bool ok) override {
    try {
      ReadDone(ok);
    } catch (const std::bad_alloc&) {
      Fail(absl::ResourceExhaustedError("out of memory while receiving the upload"));
    } catch (const std::exception& e) {
      Fail(absl::InternalError(absl::StrCat("receiving the upload failed: ", e.what())));
    }
  }

  void OnDone() override { delete this; }

 private:
  void ReadDone(bool ok) {
    if (ok) {
      absl::Status s = Handle();
      if (!s.ok()) return Fail(s);
      return StartRead(&request_);
    }
    // End of the stream: a half-close, or a client that went away.
    if (context_->IsCancelled()) return Fail(absl::CancelledError("upload cancelled"));
    if (pending_ == nullptr) return Fail(absl::InvalidArgumentError("upload sent no header"));
    // The commit (sha256, structural check, fsyncs) runs off gRPC's threads.
    if (!committer_->Post([this] { Commit(); })) {
      Fail(absl::UnavailableError("server is shutting down; the upload was not published"));
    }
  }

  void Commit() {
    try {
      auto v = pending_->Commit();
      if (!v.ok()) return Fail(v.status());
      registry_->StoreChanged(v->model_name);
      response_->set_model_name(v->model_name);
      response_->set_version(v->version);
      response_->set_sha256(v->manifest.sha256);
      response_->set_size_bytes(v->manifest.size_bytes);
      pending_.reset();
      rpc_.Record(grpc::Status::OK);
      Finish(grpc::Status::OK);
    } catch (const std::bad_alloc&) {
      Fail(absl::ResourceExhaustedError("out of memory while checking the upload"));
    } catch (const std::exception& e) {
      Fail(absl::InternalError(absl::StrCat("checking the upload failed: ", e.what())));
    }
  }

  absl::Status Handle() {
    if (request_.has_header()) {
      if (pending_ != nullptr) return absl::InvalidArgumentError("upload sent a second header");
      const v1::UploadHeader& h = request_.header();
      RETURN_IF_ERROR(ValidateName(h.model_name()));
      if (h.format() == v1::CHECKPOINT_FORMAT_UNSPECIFIED ||
          !v1::CheckpointFormat_IsValid(h.format())) {
        return absl::InvalidArgumentError(
            "upload header format is unspecified, expected STATE_DICT, TORCHSCRIPT, "
            "PICKLED_MODULE, EXPORTED_PROGRAM or AOTI_PACKAGE");
      }
      if (h.size_bytes() < 0) return absl::InvalidArgumentError("size_bytes is negative");
      if (static_cast<uint64_t>(h.size_bytes()) > max_bytes_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "upload of ", h.size_bytes(), " bytes is over the limit of ", max_bytes_, " bytes"));
      }
      if (!h.sha256().empty() &&
          (h.sha256().size() != 64 ||
           h.sha256().find_first_not_of("0123456789abcdef") != std::string::npos)) {
        return absl::InvalidArgumentError(
            absl::StrCat("upload header sha256 has ", h.sha256().size(),
                         " characters, expected 64 lower-case hex digits (or none)"));
      }
      std::string precision;
      if (!h.precision().empty()) {
        ASSIGN_OR_RETURN(const Precision p, ParsePrecision(h.precision()));
        precision = PrecisionName(p);
      }
      if (h.format() == v1::STATE_DICT && !h.architecture().empty()) {
        RETURN_IF_ERROR(ModelRegistry::CheckArchitecture(h.architecture()));
      }
      const std::string engine = absl::AsciiStrToLower(h.quantized_engine());
      if (!engine.empty() && engine != "onednn" && engine != "qnnpack" && engine != "fbgemm" &&
          engine != "x86") {
        return absl::InvalidArgumentError(absl::StrCat("upload header quantized_engine '",
                                                       h.quantized_engine().substr(0, 64),
                                                       "' is not onednn, qnnpack, fbgemm or x86"));
      }
      CheckpointStore::NewVersion nv;
      nv.model_name = h.model_name();
      nv.format = static_cast<ModelFormat>(h.format());
      nv.architecture = h.architecture();
      nv.precision = precision;
      nv.quantized_engine = engine;
      ImagePreprocess preprocess;  // the default unless the header gives one
      if (!h.preprocess().empty()) {
        ASSIGN_OR_RETURN(preprocess, ParsePreprocess(h.preprocess()));
        nv.preprocess = PreprocessJson(preprocess);
      }
      if (h.labels().size() > (4u << 20)) {
        return absl::InvalidArgumentError("labels are over 4 MiB");
      }
      nv.source = absl::StrCat("UploadCheckpoint from ", context_->peer());
      nv.max_bytes = max_bytes_;
      nv.expected_sha256 = h.sha256();
      nv.expected_size = h.size_bytes() > 0 ? h.size_bytes() : -1;
      // Never publish what could not load: the full check runs at Commit (off
      // gRPC's threads), before the version exists.
      nv.expected_architecture_sha256 = h.architecture_sha256();
      const size_t label_count =
          h.labels().empty()
              ? 0
              : static_cast<size_t>(std::count(h.labels().begin(), h.labels().end(), '\n')) +
                    (h.labels().back() == '\n' ? 0 : 1);
      nv.validate = [registry = registry_, name = h.model_name(), format = nv.format,
                     arch = h.architecture(), label_count, image_shape = preprocess.OutputShape(),
                     engine](const std::string& file, const std::string& architecture_file) {
        return registry->CheckUpload(name, file, format, arch, architecture_file, label_count,
                                     image_shape, engine);
      };
      ASSIGN_OR_RETURN(pending_, store_->BeginVersion(nv));
      if (!h.labels().empty()) RETURN_IF_ERROR(pending_->SetLabels(h.labels()));
      rpc_.SetModel(h.model_name());
      return absl::OkStatus();
    }
    if (pending_ == nullptr) return absl::InvalidArgumentError("upload must start with a header");
    if (request_.has_architecture_chunk()) {
      return pending_->AppendArchitecture(request_.architecture_chunk());
    }
    if (request_.has_calibration_chunk()) {
      return pending_->AppendCalibration(request_.calibration_chunk());
    }
    return pending_->Append(request_.chunk());
  }

  void Fail(const absl::Status& s) {
    pending_.reset();  // removes the staging directory
    const grpc::Status g = ToGrpcStatus(rpc_.Described(s));
    rpc_.Record(g);
    Finish(g);
  }

  grpc::CallbackServerContext* context_;
  const CheckpointStore* store_;
  const ModelRegistry* const registry_;  // not owned; checks loadability
  TaskRunner* const committer_;          // not owned; runs Commit
  const uint64_t max_bytes_;
  v1::UploadCheckpointResponse* response_;
  Rpc rpc_;
  v1::UploadCheckpointRequest request_;
  std::unique_ptr<PendingVersion> pending_;
};

// DownloadCheckpoint: the header, then the file in chunks; the sha256 is checked
// as the bytes go out and a mismatch ends the stream with DATA_LOSS.
class DownloadReactor : public grpc::ServerWriteReactor<v1::DownloadCheckpointResponse> {
 public:
  DownloadReactor(const CheckpointStore* store, const v1::DownloadCheckpointRequest& request,
                  size_t chunk_bytes, Rpc rpc, const absl::Status& auth)
      : chunk_bytes_(chunk_bytes), rpc_(std::move(rpc)) {
    absl::Status s = auth.ok() ? Start(store, request) : auth;
    if (!s.ok()) {
      Done(ToGrpcStatus(rpc_.Described(s)));
      return;
    }
    rpc_.SetModel(request.model_name());
    StartWrite(&message_);
  }
  ~DownloadReactor() override {
    if (fd_ >= 0) close(fd_);
  }

  // No exception leaves a gRPC thread (the chunk buffer is allocated here).
  void OnWriteDone(bool ok) override {
    try {
      WriteDone(ok);
    } catch (const std::bad_alloc&) {
      Done(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of memory while sending"));
    } catch (const std::exception& e) {
      Done(grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("sending failed: ", e.what())));
    }
  }

  void OnDone() override { delete this; }

 private:
  void WriteDone(bool ok) {
    if (!ok) return Done(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    if (sent_ == size_) {
      if (sha_.HexDigest() != expected_sha256_ && !expected_sha256_.empty()) {
        return Done(grpc::Status(grpc::StatusCode::DATA_LOSS,
                                 "stored file does not match its manifest sha256"));
      }
      return Done(grpc::Status::OK);
    }
    message_.Clear();
    std::string* chunk = message_.mutable_chunk();
    chunk->resize(std::min<uint64_t>(chunk_bytes_, size_ - sent_));
    const ssize_t n = pread(fd_, chunk->data(), chunk->size(), static_cast<off_t>(sent_));
    if (n <= 0) {
      return Done(grpc::Status(grpc::StatusCode::DATA_LOSS, "stored file is shorter than it was"));
    }
    chunk->resize(static_cast<size_t>(n));
    sha_.Update(*chunk);
    sent_ += static_cast<uint64_t>(n);
    StartWrite(&message_);
  }

  void Done(const grpc::Status& s) {
    rpc_.Record(s);
    Finish(s);
  }

  absl::Status Start(const CheckpointStore* store, const v1::DownloadCheckpointRequest& request) {
    if (request.version() < 0) return absl::InvalidArgumentError("version is negative");
    ASSIGN_OR_RETURN(StoreVersion v, store->Resolve(request.model_name(), request.version()));
    fd_ = open(v.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return absl::DataLossError(absl::StrCat("cannot open ", v.path));
    struct stat st;
    if (fstat(fd_, &st) != 0) return absl::DataLossError(absl::StrCat("cannot stat ", v.path));
    size_ = static_cast<uint64_t>(st.st_size);
    expected_sha256_ = v.manifest.sha256;
    v1::DownloadHeader* h = message_.mutable_header();
    h->set_model_name(v.model_name);
    h->set_version(v.version);
    h->set_format(static_cast<v1::CheckpointFormat>(v.manifest.format));
    h->set_architecture(v.manifest.architecture);
    h->set_sha256(v.manifest.sha256);
    h->set_size_bytes(static_cast<int64_t>(size_));
    return absl::OkStatus();
  }

  const size_t chunk_bytes_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t sent_ = 0;
  std::string expected_sha256_;
  Sha256 sha_;
  Rpc rpc_;
  v1::DownloadCheckpointResponse message_;
};

}  // namespace

grpc::ServerUnaryReactor* ModelServiceImpl::SaveModel(grpc::CallbackServerContext* context,
                                                      const v1::SaveModelRequest* request,
                                                      v1::SaveModelResponse* response) {
  Rpc rpc{this, "SaveModel"};
  if (absl::Status auth = auth_.Check(*context); !auth.ok()) return FinishNow(context, rpc, auth);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // Writing and hashing 500 MB takes a while: off gRPC's threads.
  const bool posted = admin_.Post([this, reactor, request, response, rpc]() mutable {
    auto v = registry_->Save(request->model_name(), static_cast<ModelFormat>(request->format()),
                             request->target_model_name());
    if (v.ok()) {
      rpc.SetModel(request->model_name());
      response->set_model_name(v->model_name);
      response->set_version(v->version);
      response->set_format(request->format());
      response->set_sha256(v->manifest.sha256);
      response->set_size_bytes(v->manifest.size_bytes);
    }
    rpc.Finish(reactor, v.status());
  });
  if (!posted) rpc.Finish(reactor, absl::UnavailableError("server is shutting down"));
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                      const v1::LoadModelRequest* request,
                                                      v1::LoadModelResponse* response) {
  Rpc rpc{this, "LoadModel"};
  if (absl::Status auth = auth_.Check(*context); !auth.ok()) return FinishNow(context, rpc, auth);
  if (request->version() < 0) {
    return FinishNow(
        context, rpc,
        absl::InvalidArgumentError(absl::StrCat("version ", request->version(), " is negative")));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string name = request->model_name();
  const int64_t version = request->version();
  // Version 0 returns the model to following the newest: unpin first, for every
  // replica on the store. A version > 0 is pinned once it serves.
  if (version == 0 && CheckpointStore::ValidateModelName(name).ok()) {
    if (absl::Status s = store_->SetPin(name, 0); !s.ok()) return FinishNow(context, rpc, s);
  }
  // Returns once the version serves, or with why it failed.
  registry_->LoadAsync(name, version,
                       [this, reactor, response, name, version, rpc](absl::Status s) mutable {
                         if (s.ok() && version > 0) s = store_->SetPin(name, version);
                         registry_->StoreChanged(name);
                         if (auto status = registry_->Status(name); status.ok()) {
                           ToProto(*status, response->mutable_status());
                           rpc.SetModel(name);
                         }
                         rpc.Finish(reactor, s);
                       });
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                        const v1::UnloadModelRequest* request,
                                                        v1::UnloadModelResponse* response) {
  Rpc rpc{this, "UnloadModel"};
  if (absl::Status auth = auth_.Check(*context); !auth.ok()) return FinishNow(context, rpc, auth);
  absl::Status s = registry_->Unload(request->model_name());
  if (s.ok()) {
    rpc.SetModel(request->model_name());
    if (auto status = registry_->Status(request->model_name()); status.ok()) {
      ToProto(*status, response->mutable_status());
    }
  }
  return FinishNow(context, rpc, s);
}

grpc::ServerReadReactor<v1::UploadCheckpointRequest>* ModelServiceImpl::UploadCheckpoint(
    grpc::CallbackServerContext* context, v1::UploadCheckpointResponse* response) {
  return new UploadReactor(context, store_, registry_, &admin_, options_.max_upload_bytes, response,
                           Rpc{this, "UploadCheckpoint"}, auth_.Check(*context));
}

grpc::ServerWriteReactor<v1::DownloadCheckpointResponse>* ModelServiceImpl::DownloadCheckpoint(
    grpc::CallbackServerContext* context, const v1::DownloadCheckpointRequest* request) {
  return new DownloadReactor(store_, *request, options_.chunk_bytes,
                             Rpc{this, "DownloadCheckpoint"}, auth_.Check(*context));
}

}  // namespace modelserver
