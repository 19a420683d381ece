#include "server/service/rest_gateway.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/oip_datatype.h"
#include "common/scalar_bytes.h"
#include "common/status_macros.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"

namespace modelserver {
namespace {

using json = nlohmann::json;
using Stub = inference::GRPCInferenceService::Stub;
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";
// Bounds on the JSON part of an inference request: parsed JSON takes ~16 bytes
// per value, so larger tensors must come as binary data; nesting is checked
// before anything walks (or copies) the document recursively.
constexpr size_t kMaxJsonBytes = 8 << 20;
constexpr int kMaxJsonDepth = 32;

int HttpStatus(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

void Error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", message}}.dump(), "application/json");
}

// The reply for a finished call: `body` on success, else {"error": ...}.
void Reply(httplib::Response& res, const grpc::Status& s, const json& body) {
  if (!s.ok()) return Error(res, HttpStatus(s.error_code()), s.error_message());
  res.set_content(body.dump(), "application/json");
}

// A call's context: the caller's Authorization header goes along (admin calls).
void Prepare(const httplib::Request& req, grpc::ClientContext* context) {
  if (req.has_header("Authorization")) {
    context->AddMetadata("authorization", req.get_header_value("Authorization"));
  }

  context->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
}

// The HTTP peer as gRPC writes peers ("ipv4:127.0.0.1:5000"), for AdminAuth.
std::string Peer(const httplib::Request& req) {
  if (req.remote_addr.find(':') != std::string::npos) {
    return absl::StrCat("ipv6:[", req.remote_addr, "]:", req.remote_port);
  }
  return absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
}

// How deeply `j` nests arrays and objects (1 for a scalar), without recursion.
int Depth(const json& j) {
  int deepest = 0;
  std::vector<std::pair<const json*, int>> todo = {{&j, 1}};
  while (!todo.empty()) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    deepest = std::max(deepest, depth);
    if (depth > kMaxJsonDepth) break;  // enough to refuse
    if (v->is_structured()) {
      for (const json& child : *v) todo.emplace_back(&child, depth + 1);
    }
  }
  return deepest;
}

void Flatten(const json& j, std::vector<const json*>* out) {
  if (j.is_array()) {
    for (const json& e : j) Flatten(e, out);
  } else {
    out->push_back(&j);
  }
}

// JSON "data" (nested or flat, row-major) as little-endian bytes of `dtype`.
absl::StatusOr<std::string> DataBytes(const json& data, DType dtype, const std::string& name) {
  std::vector<const json*> values;
  Flatten(data, &values);
  std::string out;
  HostTensor floats;  // for FP16 / BF16: float32 first
  floats.dtype = DType::kFloat32;
  for (const json* v : values) {
    const bool number = v->is_number();
    if ((dtype == DType::kBool && !v->is_boolean()) || (dtype != DType::kBool && !number)) {
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' data holds ", v->dump(),
                                                     ", not a ", DatatypeOf(dtype), " value"));
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
      case DType::kInt64:
        AppendScalar(&out, v->get<int64_t>());
        break;
      case DType::kInt32:
        AppendScalar(&out, v->get<int32_t>());
        break;
      case DType::kInt8:
        AppendScalar(&out, static_cast<int8_t>(v->get<int32_t>()));
        break;
      case DType::kUInt8:
        AppendScalar(&out, static_cast<uint8_t>(v->get<uint32_t>()));
        break;
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
    for (size_t at = 0; at + 4 <= bytes.size();) {
      const uint32_t n = ScalarAt<uint32_t>(bytes.substr(at, 4), 0);
      out.push_back(bytes.substr(at + 4, n));
      at += 4 + n;
    }
    return out;
  }
  ASSIGN_OR_RETURN(const DType dtype, DTypeFromDatatype(datatype));
  HostTensor t;
  t.dtype = dtype;
  t.shape = {static_cast<int64_t>(bytes.size() / std::max<size_t>(1, DTypeSize(dtype)))};
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

// The JSON (plus binary) request as a ModelInfer request with raw tensors;
// *binary_output when the caller asked for binary outputs.
absl::Status ParseInfer(const httplib::Request& req, inference::ModelInferRequest* r,
                        bool* binary_output) {
  size_t header = req.body.size();
  if (req.has_header(kHeaderLength) &&
      (!absl::SimpleAtoi(req.get_header_value(kHeaderLength), &header) ||
       header > req.body.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(kHeaderLength, " is not a length within the body"));
  }
  if (header > kMaxJsonBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the JSON part of the request is ", header, " bytes, over the limit of ",
                     kMaxJsonBytes, "; send tensors with the binary-data extension"));
  }
  json j;
  try {
    j = json::parse(req.body.substr(0, header));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the request is not JSON: ", e.what()));
  }
  if (Depth(j) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request nests JSON deeper than ", kMaxJsonDepth, " levels"));
  }
  size_t at = header;
  try {
    if (j.contains("id")) r->set_id(j["id"].get<std::string>());
    *binary_output = j.value("parameters", json::object()).value("binary_data_output", false);
    for (const json& in : j.at("inputs")) {
      auto* t = r->add_inputs();
      t->set_name(in.at("name").get<std::string>());
      t->set_datatype(in.at("datatype").get<std::string>());
      for (const json& d : in.at("shape")) t->add_shape(d.get<int64_t>());
      const json params = in.value("parameters", json::object());
      if (params.contains("binary_data_size")) {
        const size_t n = params["binary_data_size"].get<size_t>();
        if (at + n > req.body.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("input '", t->name(), "' binary_data_size ", n, " runs past the body"));
        }
        r->add_raw_input_contents(req.body.substr(at, n));
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
    }
    for (const json& out : j.value("outputs", json::array())) {
      auto* o = r->add_outputs();
      o->set_name(out.at("name").get<std::string>());
      const json params = out.value("parameters", json::object());
      if (params.contains("classification")) {
        (*o->mutable_parameters())["classification"].set_int64_param(
            params["classification"].get<int64_t>());
      }
      if (params.value("binary_data", false)) *binary_output = true;
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad inference request: ", e.what()));
  }
  return absl::OkStatus();
}

void Infer(Stub* stub, const httplib::Request& req, httplib::Response& res,
           const std::string& model, const std::string& version) {
  inference::ModelInferRequest r;
  r.set_model_name(model);
  r.set_model_version(version);
  bool binary = false;
  if (absl::Status s = ParseInfer(req, &r, &binary); !s.ok()) {
    return Error(res, s.code() == absl::StatusCode::kResourceExhausted ? 413 : 400,
                 std::string(s.message()));
  }
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::ModelInferResponse out;
  grpc::Status s = stub->ModelInfer(&context, r, &out);
  if (!s.ok()) return Reply(res, s, json());
  json body = {{"model_name", out.model_name()},
               {"model_version", out.model_version()},
               {"outputs", json::array()}};
  if (!out.id().empty()) body["id"] = out.id();
  std::string tail;
  for (int i = 0; i < out.outputs_size() && i < out.raw_output_contents_size(); ++i) {
    const auto& o = out.outputs(i);
    json entry = {{"name", o.name()}, {"datatype", o.datatype()}, {"shape", o.shape()}};
    const std::string& bytes = out.raw_output_contents(i);
    if (binary) {
      entry["parameters"] = {{"binary_data_size", bytes.size()}};
      tail += bytes;
    } else {
      absl::StatusOr<json> data = DataJson(bytes, o.datatype());
      if (!data.ok()) return Error(res, 500, std::string(data.status().message()));
      entry["data"] = *std::move(data);
    }
    body["outputs"].push_back(std::move(entry));
  }
  std::string text = body.dump();
  if (!binary) return res.set_content(text, "application/json");
  res.set_header(kHeaderLength, std::to_string(text.size()));
  res.set_content(text + tail, "application/octet-stream");
}

json TensorsJson(
    const google::protobuf::RepeatedPtrField<inference::ModelMetadataResponse::TensorMetadata>&
        ts) {
  json out = json::array();
  for (const auto& t : ts) {
    out.push_back({{"name", t.name()}, {"datatype", t.datatype()}, {"shape", t.shape()}});
  }
  return out;
}

// /v2/models/{name}[/versions/{v}] + `suffix`.
std::string ModelPath(const std::string& suffix) {
  return R"(/v2/models/([A-Za-z0-9._-]+)(?:/versions/([0-9]+))?)" + suffix;
}

void Health(Stub* stub, bool ready_call, const httplib::Request& req, httplib::Response& res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  bool yes = false;
  grpc::Status s;
  if (ready_call) {
    inference::ServerReadyResponse r;
    s = stub->ServerReady(&context, inference::ServerReadyRequest(), &r);
    yes = r.ready();
  } else {
    inference::ServerLiveResponse r;
    s = stub->ServerLive(&context, inference::ServerLiveRequest(), &r);
    yes = r.live();
  }
  if (s.ok() && !yes) return Error(res, 400, ready_call ? "not ready" : "not live");
  Reply(res, s, json::object());
}

void ModelReady(Stub* stub, const httplib::Request& req, httplib::Response& res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::ModelReadyRequest r;
  r.set_name(req.matches[1]);
  r.set_version(req.matches[2]);
  inference::ModelReadyResponse out;
  grpc::Status s = stub->ModelReady(&context, r, &out);
  if (s.ok() && !out.ready()) return Error(res, 400, "model is not ready");
  Reply(res, s, json::object());
}

void ServerMetadata(Stub* stub, const httplib::Request& req, httplib::Response& res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::ServerMetadataResponse m;
  grpc::Status s = stub->ServerMetadata(&context, inference::ServerMetadataRequest(), &m);
  Reply(res, s, {{"name", m.name()}, {"version", m.version()}, {"extensions", m.extensions()}});
}

void ModelMetadata(Stub* stub, const httplib::Request& req, httplib::Response& res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::ModelMetadataRequest r;
  r.set_name(req.matches[1]);
  r.set_version(req.matches[2]);
  inference::ModelMetadataResponse m;
  grpc::Status s = stub->ModelMetadata(&context, r, &m);
  Reply(res, s,
        {{"name", m.name()},
         {"versions", m.versions()},
         {"platform", m.platform()},
         {"inputs", TensorsJson(m.inputs())},
         {"outputs", TensorsJson(m.outputs())}});
}

void RepositoryIndex(Stub* stub, const httplib::Request& req, httplib::Response& res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::RepositoryIndexRequest r;
  try {
    if (!req.body.empty()) r.set_ready(json::parse(req.body).value("ready", false));
  } catch (const json::exception& e) {
    return Error(res, 400, absl::StrCat("the request is not JSON: ", e.what()));
  }
  inference::RepositoryIndexResponse out;
  grpc::Status s = stub->RepositoryIndex(&context, r, &out);
  json models = json::array();
  for (const auto& m : out.models()) {
    json entry = {{"name", m.name()}, {"state", m.state()}, {"reason", m.reason()}};
    if (!m.version().empty()) entry["version"] = m.version();
    models.push_back(std::move(entry));
  }
  Reply(res, s, models);
}

// Load / unload: the HTTP caller is checked here (the in-process call that
// follows carries the gateway's secret, so the gRPC side takes it as loopback);
// its token goes along as well.
void RepositoryAdmin(Stub* stub, const AdminAuth& auth, const httplib::Request& req,
                     httplib::Response& res) {
  const std::string header = req.get_header_value("Authorization");
  if (absl::Status a =
          auth.CheckHeader(req.has_header("Authorization") ? &header : nullptr, Peer(req));
      !a.ok()) {
    return Error(res, HttpStatus(static_cast<grpc::StatusCode>(a.code())),
                 std::string(a.message()));
  }
  grpc::ClientContext context;
  Prepare(req, &context);
  context.AddMetadata(AdminAuth::kGatewayHeader, auth.gateway_secret());
  grpc::Status s;
  if (req.matches[2] == "load") {
    inference::RepositoryModelLoadRequest r;
    r.set_model_name(req.matches[1]);
    inference::RepositoryModelLoadResponse out;
    s = stub->RepositoryModelLoad(&context, r, &out);
  } else {
    inference::RepositoryModelUnloadRequest r;
    r.set_model_name(req.matches[1]);
    inference::RepositoryModelUnloadResponse out;
    s = stub->RepositoryModelUnload(&context, r, &out);
  }
  Reply(res, s, json::object());
}

}  // namespace

void AddOpenInferenceRoutes(httplib::Server* server, const std::shared_ptr<grpc::Channel>& channel,
                            const AdminAuth& auth) {
  std::shared_ptr<Stub> stub = inference::GRPCInferenceService::NewStub(channel);
  using Req = const httplib::Request&;
  using Res = httplib::Response&;
  server->Get("/v2/health/live", [stub](Req req, Res res) { Health(stub.get(), false, req, res); });
  server->Get("/v2/health/ready", [stub](Req req, Res res) { Health(stub.get(), true, req, res); });
  server->Get(ModelPath("/ready"), [stub](Req req, Res res) { ModelReady(stub.get(), req, res); });
  server->Get("/v2", [stub](Req req, Res res) { ServerMetadata(stub.get(), req, res); });
  server->Get(ModelPath(""), [stub](Req req, Res res) { ModelMetadata(stub.get(), req, res); });
  server->Post(ModelPath("/infer"), [stub](Req req, Res res) {
    Infer(stub.get(), req, res, req.matches[1], req.matches[2]);
  });
  server->Post("/v2/repository/index",
               [stub](Req req, Res res) { RepositoryIndex(stub.get(), req, res); });
  server->Post(R"(/v2/repository/models/([A-Za-z0-9._-]+)/(load|unload))",
               [stub, auth](Req req, Res res) { RepositoryAdmin(stub.get(), auth, req, res); });
}

}  // namespace modelserver
