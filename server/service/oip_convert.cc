#include "server/service/oip_convert.h"

#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/scalar_bytes.h"
#include "common/status_macros.h"
#include "server/service/tensor_proto.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;

constexpr char kRegion[] = "shared_memory_region";
constexpr char kByteSize[] = "shared_memory_byte_size";
constexpr char kOffset[] = "shared_memory_offset";

// A size parameter: int64 (not negative) or uint64.
absl::StatusOr<uint64_t> SizeParameter(const Parameters& p, const char* key,
                                       absl::string_view what) {
  const inference::InferParameter& v = p.at(key);
  if (v.parameter_choice_case() == inference::InferParameter::kUint64Param) {
    return v.uint64_param();
  }
  if (v.parameter_choice_case() == inference::InferParameter::kInt64Param && v.int64_param() >= 0) {
    return static_cast<uint64_t>(v.int64_param());
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " parameter ", key, " must be a non-negative integer"));
}

// The typed contents of one input as little-endian bytes of `dtype`.
absl::StatusOr<std::string> ContentBytes(const ModelInferRequest::InferInputTensor& in, DType dtype,
                                         int64_t count) {
  const inference::InferTensorContents& c = in.contents();
  std::string out;
  auto check = [&](int64_t n) -> absl::Status {
    if (n == count) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("input '", in.name(), "' has ", n, " values in its contents, its shape ",
                     ShapeString({in.shape().begin(), in.shape().end()}), " needs ", count));
  };
  auto range = [&](int64_t v, int64_t lo, int64_t hi) -> absl::Status {
    if (v >= lo && v <= hi) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("input '", in.name(), "' value ", v, " is out of range for ", in.datatype()));
  };
  switch (dtype) {
    case DType::kFloat32:
      RETURN_IF_ERROR(check(c.fp32_contents_size()));
      for (float v : c.fp32_contents()) AppendScalar(&out, v);
      return out;
    case DType::kFloat64:
      RETURN_IF_ERROR(check(c.fp64_contents_size()));
      for (double v : c.fp64_contents()) AppendScalar(&out, v);
      return out;
    case DType::kInt64:
      RETURN_IF_ERROR(check(c.int64_contents_size()));
      for (int64_t v : c.int64_contents()) AppendScalar(&out, v);
      return out;
    case DType::kInt32:
      RETURN_IF_ERROR(check(c.int_contents_size()));
      for (int32_t v : c.int_contents()) AppendScalar(&out, v);
      return out;
    case DType::kInt8:
      RETURN_IF_ERROR(check(c.int_contents_size()));
      for (int32_t v : c.int_contents()) {
        RETURN_IF_ERROR(range(v, -128, 127));
        AppendScalar(&out, static_cast<int8_t>(v));
      }
      return out;
    case DType::kUInt8:
      RETURN_IF_ERROR(check(c.uint_contents_size()));
      for (uint32_t v : c.uint_contents()) {
        RETURN_IF_ERROR(range(v, 0, 255));
        AppendScalar(&out, static_cast<uint8_t>(v));
      }
      return out;
    case DType::kBool:
      RETURN_IF_ERROR(check(c.bool_contents_size()));
      for (bool v : c.bool_contents()) AppendScalar(&out, static_cast<uint8_t>(v ? 1 : 0));
      return out;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", in.name(), "' is ", in.datatype(),
          ", which has no typed contents in the protocol: send it as raw_input_contents"));
  }
}

// Our output tensor as the protocol's typed contents.
void ToContents(const HostTensor& t, inference::InferTensorContents* c) {
  const size_t n = static_cast<size_t>(t.NumElements());
  for (size_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::kFloat32:
        c->add_fp32_contents(ScalarAt<float>(t.data, i));
        break;
      case DType::kFloat64:
        c->add_fp64_contents(ScalarAt<double>(t.data, i));
        break;
      case DType::kInt64:
        c->add_int64_contents(ScalarAt<int64_t>(t.data, i));
        break;
      case DType::kInt32:
        c->add_int_contents(ScalarAt<int32_t>(t.data, i));
        break;
      case DType::kInt8:
        c->add_int_contents(ScalarAt<int8_t>(t.data, i));
        break;
      case DType::kUInt8:
        c->add_uint_contents(ScalarAt<uint8_t>(t.data, i));
        break;
      case DType::kBool:
        c->add_bool_contents(ScalarAt<uint8_t>(t.data, i) != 0);
        break;
      default:  // float16 / bfloat16 outputs only answer raw requests
        break;
    }
  }
}

// The "classification" parameter of the requested outputs (0 when none). Only
// the first requested output may carry it: Predict ranks one output.
absl::StatusOr<int> Classification(const ModelInferRequest& request) {
  int k = 0;
  for (int i = 0; i < request.outputs_size(); ++i) {
    const auto& out = request.outputs(i);
    auto it = out.parameters().find("classification");
    if (it == out.parameters().end()) continue;
    if (i > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("output '", out.name(),
                       "' asks for classification, which is answered for the first "
                       "requested output only; request it first, or in a request of its own"));
    }
    if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param ||
        it->second.int64_param() < 1 || it->second.int64_param() > 1000000) {
      return absl::InvalidArgumentError(
          "the classification parameter must be an int64 between 1 and 1000000");
    }
    k = static_cast<int>(it->second.int64_param());
  }
  return k;
}

// The requested outputs by name, in order; none requested: every output.
void ToOutputChoice(const ModelInferRequest& request, v1::PredictRequest* predict) {
  for (const auto& out : request.outputs()) predict->add_output_names(out.name());
  predict->set_all_outputs(request.outputs_size() == 0);
}

// A BYTES input: encoded images, one element per sample (shape [N] or [N, 1]),
// as bytes_contents or as raw_input_contents (each element a 4-byte
// little-endian length, then its bytes).
absl::Status ToImages(const ModelInferRequest& request, v1::PredictRequest* predict) {
  const auto& in = request.inputs(0);
  if (in.shape_size() < 1 || in.shape_size() > 2 || in.shape(0) < 0 ||
      (in.shape_size() == 2 && in.shape(1) != 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BYTES input '", in.name(), "' (encoded images) must have shape [N] or [N, 1]"));
  }
  const int64_t n = in.shape(0);
  if (request.raw_input_contents_size() > 0) {
    if (in.has_contents()) {
      return absl::InvalidArgumentError(
          "input has contents although raw_input_contents is used; send one or the other");
    }
    const std::string& raw = request.raw_input_contents(0);
    for (size_t at = 0; at < raw.size();) {
      if (raw.size() - at < 4) {
        return absl::InvalidArgumentError("BYTES raw contents end inside an element's length");
      }
      const uint32_t len = ScalarAt<uint32_t>(raw.substr(at, 4), 0);
      if (raw.size() - at - 4 < len) {
        return absl::InvalidArgumentError(absl::StrCat("BYTES element ", predict->images_size(),
                                                       " is ", len, " bytes, past the contents"));
      }
      predict->add_images(raw.substr(at + 4, len));
      at += 4 + len;
    }
  } else {
    for (const std::string& b : in.contents().bytes_contents()) predict->add_images(b);
  }
  if (predict->images_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' has shape with ", n,
                                                   " elements but ", predict->images_size(),
                                                   " images"));
  }
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' is empty"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseModelVersion(absl::string_view version) {
  if (version.empty()) return 0;
  int64_t v = 0;
  if (!absl::SimpleAtoi(version, &v) || v < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model version '", version, "' is not a positive decimal number"));
  }
  return v;
}

absl::Status ToPredictRequest(const ModelInferRequest& request, v1::PredictRequest* predict) {
  predict->set_model_name(request.model_name());
  ASSIGN_OR_RETURN(const int64_t version, ParseModelVersion(request.model_version()));
  predict->set_version(version);
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", request.inputs_size(),
                                                   " inputs; the models served here take one"));
  }
  const auto& in = request.inputs(0);
  if (in.datatype() == "BYTES") {
    RETURN_IF_ERROR(ToImages(request, predict));
    ToOutputChoice(request, predict);
    ASSIGN_OR_RETURN(const int k, Classification(request));
    predict->set_top_k(k);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const DType dtype, DTypeFromDatatype(in.datatype()));
  v1::Tensor* t = predict->mutable_input();
  t->set_dtype(static_cast<v1::DataType>(dtype));
  for (int64_t d : in.shape()) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' shape has ", d));
    }
    t->add_shape(d);
  }
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "raw_input_contents has ", request.raw_input_contents_size(), " entries for 1 input"));
    }
    if (in.has_contents()) {
      return absl::InvalidArgumentError(
          "input has contents although raw_input_contents is used; send one or the other");
    }
    t->set_data(request.raw_input_contents(0));
  } else {
    HostTensor shape_only;
    shape_only.shape.assign(in.shape().begin(), in.shape().end());
    ASSIGN_OR_RETURN(std::string bytes, ContentBytes(in, dtype, shape_only.NumElements()));
    t->set_data(std::move(bytes));
  }
  ToOutputChoice(request, predict);
  ASSIGN_OR_RETURN(const int k, Classification(request));
  predict->set_top_k(k);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SharedMemoryRef>> SharedMemoryParameters(
    const Parameters& parameters, absl::string_view what) {
  auto region = parameters.find(kRegion);
  if (region == parameters.end()) {
    if (parameters.contains(kByteSize) || parameters.contains(kOffset)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has shared memory parameters but no ", kRegion));
    }
    return nullptr;
  }
  if (region->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " parameter ", kRegion, " must be a string"));
  }
  if (!parameters.contains(kByteSize)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " names shared memory region '",
                                                   region->second.string_param(), "' without ",
                                                   kByteSize));
  }
  auto ref = std::make_unique<SharedMemoryRef>();
  ref->region = region->second.string_param();
  ASSIGN_OR_RETURN(ref->byte_size, SizeParameter(parameters, kByteSize, what));
  if (parameters.contains(kOffset)) {
    ASSIGN_OR_RETURN(ref->offset, SizeParameter(parameters, kOffset, what));
  }
  return ref;
}

bool UsesSharedMemory(const ModelInferRequest& request) {
  for (const auto& in : request.inputs()) {
    if (in.parameters().contains(kRegion)) return true;
  }
  for (const auto& out : request.outputs()) {
    if (out.parameters().contains(kRegion)) return true;
  }
  return false;
}

absl::Status ReadSharedMemoryInputs(const SharedMemoryRegions& regions, uint64_t max_bytes,
                                    ModelInferRequest* request) {
  for (auto& in : *request->mutable_inputs()) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<SharedMemoryRef> ref,
        SharedMemoryParameters(in.parameters(), absl::StrCat("input '", in.name(), "'")));
    if (ref == nullptr) continue;
    if (in.has_contents() || request->raw_input_contents_size() > 0 ||
        request->inputs_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", in.name(), "' names shared memory region '", ref->region,
          "' but the request also carries tensor data; send the one input in one place"));
    }
    ASSIGN_OR_RETURN(std::string bytes,
                     regions.Read(ref->region, ref->offset, ref->byte_size, max_bytes));
    *request->add_raw_input_contents() = std::move(bytes);
  }
  return absl::OkStatus();
}

absl::Status WriteSharedMemoryOutputs(const ModelInferRequest& request,
                                      const SharedMemoryRegions& regions,
                                      ModelInferResponse* response) {
  int placed = 0;
  for (const auto& wanted : request.outputs()) {
    ASSIGN_OR_RETURN(
        std::unique_ptr<SharedMemoryRef> ref,
        SharedMemoryParameters(wanted.parameters(), absl::StrCat("output '", wanted.name(), "'")));
    if (ref == nullptr) continue;
    int i = 0;
    while (i < response->outputs_size() && response->outputs(i).name() != wanted.name()) ++i;
    if (i == response->outputs_size() || i >= response->raw_output_contents_size()) {
      return absl::InternalError(
          absl::StrCat("output '", wanted.name(), "' has no raw contents to place in memory"));
    }
    std::string* bytes = response->mutable_raw_output_contents(i);
    RETURN_IF_ERROR(regions.Write(ref->region, ref->offset, ref->byte_size, *bytes));
    auto& params = *response->mutable_outputs(i)->mutable_parameters();
    params[kRegion].set_string_param(ref->region);
    params[kByteSize].set_int64_param(static_cast<int64_t>(bytes->size()));
    if (ref->offset > 0) params[kOffset].set_int64_param(static_cast<int64_t>(ref->offset));
    bytes->clear();
    ++placed;
  }
  // No raw contents when every output went to shared memory.
  if (placed > 0 && placed == response->outputs_size()) response->clear_raw_output_contents();
  return absl::OkStatus();
}

namespace {

// One output of a ModelInfer response: its contents, or with `k` > 0 Triton's
// classification extension ("<score>:<index>[:<label>]" per class, best first,
// from Predict's top_k rows).
absl::Status AddOutput(const std::string& name, HostTensor out, int k, bool raw,
                       const v1::PredictResponse& predict, ModelInferResponse* response) {
  auto* o = response->add_outputs();
  o->set_name(name);
  if (k == 0) {
    o->set_datatype(DatatypeOf(out.dtype));
    for (int64_t d : out.shape) o->add_shape(d);
    if (raw) {
      response->add_raw_output_contents(std::move(out.data));
    } else {
      ToContents(out, o->mutable_contents());
    }
    return absl::OkStatus();
  }
  if (out.dtype != DType::kFloat32 || predict.top_k_size() == 0) {
    return absl::InvalidArgumentError("classification needs a float32 [N, C] output");
  }
  const int64_t classes = out.shape.back();
  const int64_t rows = out.shape.size() == 2 ? out.shape[0] : 1;
  if (out.shape.size() > 2 || predict.top_k_size() > rows) {
    return absl::InternalError(absl::StrCat("classification of a ", ShapeString(out.shape),
                                            " output with ", predict.top_k_size(), " top-k rows"));
  }
  for (const v1::TopK& row : predict.top_k()) {
    for (const v1::Class& c : row.classes()) {
      if (c.index() < 0 || c.index() >= classes) {
        return absl::InternalError(
            absl::StrCat("top-k class ", c.index(), " is not one of the ", classes, " classes"));
      }
    }
  }
  o->set_datatype("BYTES");
  if (out.shape.size() == 2) o->add_shape(predict.top_k_size());
  o->add_shape(predict.top_k(0).classes_size());
  std::string raw_bytes;
  for (int i = 0; i < predict.top_k_size(); ++i) {
    for (const v1::Class& c : predict.top_k(i).classes()) {
      const float score = ScalarAt<float>(out.data, static_cast<size_t>(i * classes + c.index()));
      std::string s = absl::StrFormat("%f:%d", score, c.index());
      if (!c.label().empty()) absl::StrAppend(&s, ":", c.label());
      if (raw) {
        AppendScalar(&raw_bytes, static_cast<uint32_t>(s.size()));
        raw_bytes += s;
      } else {
        o->mutable_contents()->add_bytes_contents(s);
      }
    }
  }
  if (raw) response->add_raw_output_contents(std::move(raw_bytes));
  return absl::OkStatus();
}

}  // namespace

absl::Status FromPredictResponse(const ModelInferRequest& request,
                                 const v1::PredictResponse& predict, ModelInferResponse* response) {
  response->set_model_name(predict.model_name());
  response->set_model_version(absl::StrCat(predict.version()));
  response->set_id(request.id());
  bool raw = request.raw_input_contents_size() > 0;
  for (const auto& o : request.outputs()) raw = raw || o.parameters().contains(kRegion);
  ASSIGN_OR_RETURN(const int k, Classification(request));
  ASSIGN_OR_RETURN(HostTensor out, FromProto(predict.output()));
  const std::string first = predict.output_name().empty() ? "output" : predict.output_name();
  RETURN_IF_ERROR(AddOutput(first, std::move(out), k, raw, predict, response));
  for (const v1::NamedTensor& more : predict.more_outputs()) {
    ASSIGN_OR_RETURN(HostTensor t, FromProto(more.tensor()));
    RETURN_IF_ERROR(AddOutput(more.name(), std::move(t), 0, raw, predict, response));
  }
  return absl::OkStatus();
}

}  // namespace modelserver
