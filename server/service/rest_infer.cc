#include "server/service/rest_infer.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/oip_datatype.h"
#include "common/scalar_bytes.h"
#include "common/status_macros.h"
#include "common/wire_size.h"

namespace modelserver {
namespace {

using json = nlohmann::json;
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

// How deeply `j` nests arrays and objects (1 for a scalar), without recursion.
int Depth(const json& j) {
  int deepest = 0;
  std::vector<std::pair<const json*, int>> todo = {{&j, 1}};
  while (!todo.empty()) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    deepest = std::max(deepest, depth);
    if (depth > RestInferLimits::kMaxJsonDepth) break;  // enough to refuse
    if (v->is_structured()) {
      for (const json& child : *v) todo.emplace_back(&child, depth + 1);
    }
  }
  return deepest;
}

// Leaves of `j` in row-major order (depth is bounded by Depth before this runs).
void Flatten(const json& j, std::vector<const json*>* out) {
  if (j.is_array()) {
    for (const json& e : j) Flatten(e, out);
  } else {
    out->push_back(&j);
  }
}

// A JSON size (binary_data_size, a shape dimension): an integer in [0, limit].
absl::StatusOr<size_t> JsonSize(const json& v, size_t limit, const std::string& what) {
  if (v.is_number_unsigned()) return WireSizeUnsigned(v.get<uint64_t>(), limit, what);
  if (v.is_number_integer()) return WireSize(v.get<int64_t>(), limit, what);
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", v.dump().substr(0, 40), ", not an integer"));
}

// Triton's shared memory parameters of a JSON input or output, copied into
// `out` (checked later, where the regions are); false when it names no region.
absl::StatusOr<bool> SharedMemoryJson(
    const json& params, const std::string& what,
    google::protobuf::Map<std::string, inference::InferParameter>* out) {
  if (!params.is_object() || !params.contains("shared_memory_region")) return false;
  const json& region = params["shared_memory_region"];
  if (!region.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " shared_memory_region is not a string"));
  }
  (*out)["shared_memory_region"].set_string_param(region.get<std::string>());
  for (const char* key : {"shared_memory_byte_size", "shared_memory_offset"}) {
    if (!params.contains(key)) continue;
    ASSIGN_OR_RETURN(const size_t n,
                     JsonSize(params[key], static_cast<size_t>(std::numeric_limits<int64_t>::max()),
                              absl::StrCat(what, " ", key)));
    (*out)[key].set_int64_param(static_cast<int64_t>(n));
  }
  return true;
}

// An integer JSON value within [lo, hi] (the datatype's range).
absl::StatusOr<int64_t> JsonInteger(const json& v, int64_t lo, int64_t hi, const std::string& name,
                                    DType dtype) {
  bool fits = false;
  int64_t out = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    fits = u <= static_cast<uint64_t>(hi);
    out = fits ? static_cast<int64_t>(u) : 0;
  } else if (v.is_number_integer()) {
    out = v.get<int64_t>();
    fits = out >= lo && out <= hi;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "' data holds ",
                                                   v.dump().substr(0, 40), ", not an integer ",
                                                   DatatypeOf(dtype), " value"));
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "' value ",
                                                   v.dump().substr(0, 40), " is out of range for ",
                                                   DatatypeOf(dtype), " [", lo, ", ", hi, "]"));
  }
  return out;
}

// JSON "data" (nested or flat, row-major) as little-endian bytes of `dtype`.
absl::StatusOr<std::string> DataBytes(const json& data, DType dtype, const std::string& name) {
  std::vector<const json*> values;
  Flatten(data, &values);
  std::string out;
  HostTensor floats;  // for FP16 / BF16: float32 first
  floats.dtype = DType::kFloat32;
  for (const json* v : values) {
    if ((dtype == DType::kBool && !v->is_boolean()) || (dtype != DType::kBool && !v->is_number())) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' data holds ",
                                                     v->dump().substr(0, 40), ", not a ",
                                                     DatatypeOf(dtype), " value"));
    }
    switch (dtype) {
      case DType::kFloat32:
      case DType::kFloat16:
      case DType::kBFloat16:
        AppendScalar(&(dtype == DType::kFloat32 ? out : floats.data), v->get<float>());
        break;
      case DType::kFloat64:
        AppendScalar(&out, v->get<double>());
        break;
      case DType::kInt64: {
        ASSIGN_OR_RETURN(const int64_t x,
                         JsonInteger(*v, std::numeric_limits<int64_t>::min(),
                                     std::numeric_limits<int64_t>::max(), name, dtype));
        AppendScalar(&out, x);
        break;
      }
      case DType::kInt32: {
        ASSIGN_OR_RETURN(const int64_t x,
                         JsonInteger(*v, std::numeric_limits<int32_t>::min(),
                                     std::numeric_limits<int32_t>::max(), name, dtype));
        AppendScalar(&out, static_cast<int32_t>(x));
        break;
      }
      case DType::kInt8: {
        ASSIGN_OR_RETURN(const int64_t x, JsonInteger(*v, -128, 127, name, dtype));
        AppendScalar(&out, static_cast<int8_t>(x));
        break;
      }
      case DType::kUInt8: {
        ASSIGN_OR_RETURN(const int64_t x, JsonInteger(*v, 0, 255, name, dtype));
        AppendScalar(&out, static_cast<uint8_t>(x));
        break;
      }
      case DType::kBool:
        AppendScalar(&out, static_cast<uint8_t>(v->get<bool>() ? 1 : 0));
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("input '", name, "': unsupported datatype"));
    }
  }
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16) {
    floats.shape = {static_cast<int64_t>(values.size())};
    ASSIGN_OR_RETURN(HostTensor narrow, ConvertFloat(floats, dtype));
    return std::move(narrow.data);
  }
  return out;
}

// BYTES data in JSON (images: base64 strings, as KServe's image examples send
// them) as raw BYTES contents: each element a 4-byte little-endian length, then
// the decoded bytes.
absl::StatusOr<std::string> Base64Elements(const json& data, const std::string& name) {
  if (!data.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("input '", name, "' data is not an array"));
  }
  std::string out;
  for (size_t i = 0; i < data.size(); ++i) {
    std::string bytes;
    if (!data[i].is_string() || !absl::Base64Unescape(data[i].get<std::string>(), &bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", name, "' element ", i,
                       " is not a base64 string (BYTES images are sent "
                       "base64-encoded in JSON, or raw with the binary-data extension)"));
    }
    AppendScalar(&out, static_cast<uint32_t>(bytes.size()));
    out += bytes;
  }
  return out;
}

// Raw output bytes of `datatype` as a flat JSON array.
absl::StatusOr<json> DataJson(const std::string& bytes, const std::string& datatype) {
  json out = json::array();
  if (datatype == "BYTES") {  // 4-byte little-endian length, then the bytes
    for (size_t at = 0; at < bytes.size();) {
      RETURN_IF_ERROR(CheckSpan(at, 4, bytes.size(), "BYTES output element length"));
      const uint32_t n = ScalarAt<uint32_t>(bytes.substr(at, 4), 0);
      RETURN_IF_ERROR(CheckSpan(at + 4, n, bytes.size(), "BYTES output element"));
      out.push_back(bytes.substr(at + 4, n));
      at += 4 + static_cast<size_t>(n);
    }
    return out;
  }
  ASSIGN_OR_RETURN(const DType dtype, DTypeFromDatatype(datatype));
  HostTensor t;
  t.dtype = dtype;
  const size_t elem = std::max<size_t>(1, DTypeSize(dtype));
  if (bytes.size() % elem != 0) {
    return absl::InternalError(
        absl::StrCat("output of ", bytes.size(), " bytes is not whole ", datatype, " values"));
  }
  t.shape = {static_cast<int64_t>(bytes.size() / elem)};
  t.data = bytes;
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16) {
    ASSIGN_OR_RETURN(t, ConvertFloat(t, DType::kFloat32));
  }
  for (size_t i = 0; i < static_cast<size_t>(t.shape[0]); ++i) {
    switch (t.dtype) {
      case DType::kFloat32:
        out.push_back(ScalarAt<float>(t.data, i));
        break;
      case DType::kFloat64:
        out.push_back(ScalarAt<double>(t.data, i));
        break;
      case DType::kInt64:
        out.push_back(ScalarAt<int64_t>(t.data, i));
        break;
      case DType::kInt32:
        out.push_back(ScalarAt<int32_t>(t.data, i));
        break;
      case DType::kInt8:
        out.push_back(ScalarAt<int8_t>(t.data, i));
        break;
      case DType::kUInt8:
        out.push_back(ScalarAt<uint8_t>(t.data, i));
        break;
      default:
        out.push_back(ScalarAt<uint8_t>(t.data, i) != 0);
    }
  }
  return out;
}

absl::Status ParseJson(absl::string_view body, size_t header, const RestInferLimits& limits,
                       inference::ModelInferRequest* r, bool* binary_output) {
  json j = json::parse(body.substr(0, header), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the request is not JSON");
  if (Depth(j) > RestInferLimits::kMaxJsonDepth) {
    return absl::InvalidArgumentError(absl::StrCat("the request nests JSON deeper than ",
                                                   RestInferLimits::kMaxJsonDepth, " levels"));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("the request is not a JSON object");
  if (j.contains("id")) r->set_id(j["id"].get<std::string>());
  *binary_output = j.value("parameters", json::object()).value("binary_data_output", false);
  if (!j.contains("inputs") || !j["inputs"].is_array()) {
    return absl::InvalidArgumentError("the request has no \"inputs\" array");
  }
  size_t at = header;  // the binary part's next unread byte
  for (const json& in : j["inputs"]) {
    auto* t = r->add_inputs();
    t->set_name(in.at("name").get<std::string>());
    t->set_datatype(in.at("datatype").get<std::string>());
    const json& shape = in.at("shape");
    if (!shape.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("input '", t->name(), "' shape is not a list"));
    }
    for (const json& d : shape) {
      ASSIGN_OR_RETURN(const size_t dim,
                       JsonSize(d, static_cast<size_t>(std::numeric_limits<int64_t>::max()),
                                absl::StrCat("input '", t->name(), "' shape dimension")));
      t->add_shape(static_cast<int64_t>(dim));
    }
    const json params = in.value("parameters", json::object());
    ASSIGN_OR_RETURN(
        const bool shared,
        SharedMemoryJson(params, absl::StrCat("input '", t->name(), "'"), t->mutable_parameters()));
    if (shared) continue;  // its bytes are in the region
    if (params.is_object() && params.contains("binary_data_size")) {
      ASSIGN_OR_RETURN(const size_t n,
                       JsonSize(params["binary_data_size"], body.size() - at,
                                absl::StrCat("input '", t->name(), "' binary_data_size (",
                                             body.size() - at, " bytes of the body are left)")));
      r->add_raw_input_contents(std::string(body.substr(at, n)));
      at += n;
      continue;
    }
    if (t->datatype() == "BYTES") {  // encoded images, base64 in JSON
      ASSIGN_OR_RETURN(std::string bytes, Base64Elements(in.at("data"), t->name()));
      r->add_raw_input_contents(std::move(bytes));
      continue;
    }
    ASSIGN_OR_RETURN(const DType dtype, DTypeFromDatatype(t->datatype()));
    ASSIGN_OR_RETURN(std::string bytes, DataBytes(in.at("data"), dtype, t->name()));
    r->add_raw_input_contents(std::move(bytes));
    if (r->ByteSizeLong() > limits.max_message_bytes) break;  // refused below
  }
  for (const json& out : j.value("outputs", json::array())) {
    auto* o = r->add_outputs();
    o->set_name(out.at("name").get<std::string>());
    const json params = out.value("parameters", json::object());
    RETURN_IF_ERROR(
        SharedMemoryJson(params, absl::StrCat("output '", o->name(), "'"), o->mutable_parameters())
            .status());
    if (params.contains("classification")) {
      const json& k = params["classification"];
      if (!k.is_number_integer()) {
        return absl::InvalidArgumentError("the classification parameter must be an integer");
      }
      (*o->mutable_parameters())["classification"].set_int64_param(k.get<int64_t>());
    }
    if (params.value("binary_data", false)) *binary_output = true;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseRestInfer(absl::string_view body, const std::string* header_length,
                            const RestInferLimits& limits, inference::ModelInferRequest* request,
                            bool* binary_output) {
  size_t header = body.size();
  if (header_length != nullptr) {
    ASSIGN_OR_RETURN(header, WireSizeText(*header_length, body.size(),
                                          absl::StrCat(kHeaderLength, " (a length within the ",
                                                       body.size(), "-byte body)")));
  }
  if (header > RestInferLimits::kMaxJsonBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the JSON part of the request is ", header, " bytes, over the limit of ",
        RestInferLimits::kMaxJsonBytes, "; send tensors with the binary-data extension"));
  }
  try {
    RETURN_IF_ERROR(ParseJson(body, header, limits, request, binary_output));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad inference request: ", e.what()));
  }
  if (const size_t n = request->ByteSizeLong(); n > limits.max_message_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request is ", n, " bytes as a message, over the limit of ", limits.max_message_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FormatRestInfer(const inference::ModelInferResponse& response,
                                            bool binary, size_t* json_bytes) {
  json body = {{"model_name", response.model_name()},
               {"model_version", response.model_version()},
               {"outputs", json::array()}};
  if (!response.id().empty()) body["id"] = response.id();
  std::string tail;
  int raw = 0;  // outputs in shared memory have no raw contents
  for (int i = 0; i < response.outputs_size(); ++i) {
    const auto& o = response.outputs(i);
    json entry = {{"name", o.name()}, {"datatype", o.datatype()}, {"shape", o.shape()}};
    if (auto region = o.parameters().find("shared_memory_region"); region != o.parameters().end()) {
      entry["parameters"] = {{"shared_memory_region", region->second.string_param()}};
      for (const char* key : {"shared_memory_byte_size", "shared_memory_offset"}) {
        if (auto p = o.parameters().find(key); p != o.parameters().end()) {
          entry["parameters"][key] = p->second.int64_param();
        }
      }
      body["outputs"].push_back(std::move(entry));
      continue;
    }
    if (raw >= response.raw_output_contents_size()) break;
    const std::string& bytes = response.raw_output_contents(raw++);
    if (binary) {
      entry["parameters"] = {{"binary_data_size", bytes.size()}};
      tail += bytes;
    } else {
      ASSIGN_OR_RETURN(json data, DataJson(bytes, o.datatype()));
      entry["data"] = std::move(data);
    }
    body["outputs"].push_back(std::move(entry));
  }
  std::string text;
  try {
    text = body.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const json::exception& e) {
    return absl::InternalError(absl::StrCat("cannot write the response: ", e.what()));
  }
  *json_bytes = text.size();
  return text + tail;
}

}  // namespace modelserver
