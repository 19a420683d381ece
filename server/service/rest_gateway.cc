#include "server/service/rest_gateway.h"

#include <grpcpp/grpcpp.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"
#include "server/service/oip_convert.h"
#include "server/service/rest_infer.h"

namespace modelserver {
namespace {

using json = nlohmann::json;
using Stub = inference::GRPCInferenceService::Stub;
constexpr char kHeaderLength[] = "Inference-Header-Content-Length";
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

void Error(HttpResponse* res, int status, const std::string& message) {
  res->Set(status, json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace),
           "application/json");
}

// The reply for a finished call: `body` on success, else {"error": ...}.
void Reply(HttpResponse* res, const grpc::Status& s, const json& body) {
  if (!s.ok()) return Error(res, HttpStatus(s.error_code()), s.error_message());
  res->Set(200, body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// A call's context: the caller's Authorization header goes along (admin calls).
void Prepare(const HttpRequest& req, grpc::ClientContext* context) {
  if (const std::string* auth = req.Header("authorization")) {
    context->AddMetadata("authorization", *auth);
  }

  context->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
}

// The HTTP peer as gRPC writes peers ("ipv4:127.0.0.1:5000"), for AdminAuth.
std::string Peer(const HttpRequest& req) {
  if (req.remote_addr.find(':') != std::string::npos) {
    return absl::StrCat("ipv6:[", req.remote_addr, "]:", req.remote_port);
  }
  return absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
}

// An admin call's check of the HTTP caller (its peer and token); when it passes,
// the in-process call that follows carries the gateway's secret, so the gRPC
// side takes it as loopback (the token goes along as well).
absl::Status Vouch(const AdminAuth& auth, const HttpRequest& req, grpc::ClientContext* context) {
  RETURN_IF_ERROR(auth.CheckHeader(req.Header("authorization"), Peer(req)));
  context->AddMetadata(AdminAuth::kGatewayHeader, auth.gateway_secret());
  return absl::OkStatus();
}

void AuthError(HttpResponse* res, const absl::Status& a) {
  Error(res, HttpStatus(static_cast<grpc::StatusCode>(a.code())), std::string(a.message()));
}

// A request message naming the model and version the HTTP path names.
template <typename Request>
Request ForModel(const HttpRequest& req) {
  Request r;
  r.set_name(req.Param(0));
  r.set_version(req.Param(1));
  return r;
}

// ModelMetadata of the model and version the request's path names.
grpc::Status Metadata(Stub* stub, const HttpRequest& req, inference::ModelMetadataResponse* m) {
  grpc::ClientContext context;
  Prepare(req, &context);
  const auto r = ForModel<inference::ModelMetadataRequest>(req);
  return stub->ModelMetadata(&context, r, m);
}

void Infer(Stub* stub, const AdminAuth& auth, const RestInferLimits& limits, const HttpRequest& req,
           HttpResponse* res) {
  // An unknown model or version is NOT_FOUND before any input is looked at.
  inference::ModelMetadataResponse known;
  if (grpc::Status s = Metadata(stub, req, &known); !s.ok()) return Reply(res, s, json());
  inference::ModelInferRequest r;
  r.set_model_name(req.Param(0));
  r.set_model_version(req.Param(1));
  bool binary = false;
  if (absl::Status s = ParseRestInfer(req.body, req.Header(kHeaderLength), limits, &r, &binary);
      !s.ok()) {
    return Error(res, s.code() == absl::StatusCode::kResourceExhausted ? 413 : 400,
                 std::string(s.message()));
  }
  grpc::ClientContext context;
  Prepare(req, &context);
  if (UsesSharedMemory(r)) {  // an admin call's check, as for registering the region
    if (absl::Status a = Vouch(auth, req, &context); !a.ok()) return AuthError(res, a);
  }
  inference::ModelInferResponse out;
  grpc::Status s = stub->ModelInfer(&context, r, &out);
  if (!s.ok()) return Reply(res, s, json());
  size_t json_bytes = 0;
  absl::StatusOr<std::string> body = FormatRestInfer(out, binary, &json_bytes);
  if (!body.ok()) return Error(res, 500, std::string(body.status().message()));
  if (!binary) return res->Set(200, *std::move(body), "application/json");
  res->headers.emplace_back(kHeaderLength, std::to_string(json_bytes));
  res->Set(200, *std::move(body), "application/octet-stream");
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

void Health(Stub* stub, bool ready_call, const HttpRequest& req, HttpResponse* res) {
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

void ModelReady(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  const auto r = ForModel<inference::ModelReadyRequest>(req);
  inference::ModelReadyResponse out;
  grpc::Status s = stub->ModelReady(&context, r, &out);
  if (s.ok() && !out.ready()) return Error(res, 400, "model is not ready");
  Reply(res, s, json::object());
}

void ServerMetadata(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::ServerMetadataResponse m;
  grpc::Status s = stub->ServerMetadata(&context, inference::ServerMetadataRequest(), &m);
  Reply(res, s, {{"name", m.name()}, {"version", m.version()}, {"extensions", m.extensions()}});
}

void ModelMetadata(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  inference::ModelMetadataResponse m;
  grpc::Status s = Metadata(stub, req, &m);
  Reply(res, s,
        {{"name", m.name()},
         {"versions", m.versions()},
         {"platform", m.platform()},
         {"inputs", TensorsJson(m.inputs())},
         {"outputs", TensorsJson(m.outputs())}});
}

json DurationJson(const inference::StatisticDuration& d) {
  return {{"count", d.count()}, {"ns", d.ns()}};
}

// Triton's JSON forms: proto field names, numbers as numbers, enums by name.
void ModelConfig(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  const auto r = ForModel<inference::ModelConfigRequest>(req);
  inference::ModelConfigResponse out;
  grpc::Status s = stub->ModelConfig(&context, r, &out);
  const inference::ModelConfig& c = out.config();
  json inputs = json::array(), outputs = json::array(), groups = json::array();
  for (const auto& i : c.input()) {
    inputs.push_back({{"name", i.name()},
                      {"data_type", inference::DataType_Name(i.data_type())},
                      {"dims", i.dims()}});
  }
  for (const auto& o : c.output()) {
    outputs.push_back({{"name", o.name()},
                       {"data_type", inference::DataType_Name(o.data_type())},
                       {"dims", o.dims()},
                       {"label_filename", o.label_filename()}});
  }
  for (const auto& g : c.instance_group()) {
    groups.push_back({{"name", g.name()},
                      {"count", g.count()},
                      {"kind", inference::ModelInstanceGroup::Kind_Name(g.kind())},
                      {"gpus", g.gpus()}});
  }
  json policy =
      c.version_policy().has_specific()
          ? json{{"specific", {{"versions", c.version_policy().specific().versions()}}}}
          : json{{"latest", {{"num_versions", c.version_policy().latest().num_versions()}}}};
  json body = {{"name", c.name()},
               {"platform", c.platform()},
               {"backend", c.backend()},
               {"version_policy", policy},
               {"max_batch_size", c.max_batch_size()},
               {"input", inputs},
               {"output", outputs},
               {"instance_group", groups},
               {"default_model_filename", c.default_model_filename()}};
  if (c.has_dynamic_batching()) {
    body["dynamic_batching"] = {
        {"preferred_batch_size", c.dynamic_batching().preferred_batch_size()},
        {"max_queue_delay_microseconds", c.dynamic_batching().max_queue_delay_microseconds()}};
  }
  Reply(res, s, body);
}

void ModelStats(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  const auto r = ForModel<inference::ModelStatisticsRequest>(req);
  inference::ModelStatisticsResponse out;
  grpc::Status s = stub->ModelStatistics(&context, r, &out);
  json stats = json::array();
  for (const auto& m : out.model_stats()) {
    const inference::InferStatistics& i = m.inference_stats();
    json batches = json::array();
    for (const auto& b : m.batch_stats()) {
      batches.push_back({{"batch_size", b.batch_size()},
                         {"compute_input", DurationJson(b.compute_input())},
                         {"compute_infer", DurationJson(b.compute_infer())},
                         {"compute_output", DurationJson(b.compute_output())}});
    }
    stats.push_back({{"name", m.name()},
                     {"version", m.version()},
                     {"last_inference", m.last_inference()},
                     {"inference_count", m.inference_count()},
                     {"execution_count", m.execution_count()},
                     {"inference_stats",
                      {{"success", DurationJson(i.success())},
                       {"fail", DurationJson(i.fail())},
                       {"queue", DurationJson(i.queue())},
                       {"compute_input", DurationJson(i.compute_input())},
                       {"compute_infer", DurationJson(i.compute_infer())},
                       {"compute_output", DurationJson(i.compute_output())}}},
                     {"batch_stats", batches}});
  }
  Reply(res, s, {{"model_stats", stats}});
}

void RepositoryIndex(Stub* stub, const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  inference::RepositoryIndexRequest r;
  try {
    if (!req.body.empty()) {
      const json body = json::parse(req.body);
      if (!body.is_object()) return Error(res, 400, "the request is not a JSON object");
      r.set_ready(body.value("ready", false));
    }
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
void RepositoryAdmin(Stub* stub, const AdminAuth& auth, bool load, const HttpRequest& req,
                     HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  if (absl::Status a = Vouch(auth, req, &context); !a.ok()) return AuthError(res, a);
  grpc::Status s;
  if (load) {
    inference::RepositoryModelLoadRequest r;
    r.set_model_name(req.Param(0));
    inference::RepositoryModelLoadResponse out;
    s = stub->RepositoryModelLoad(&context, r, &out);
  } else {
    inference::RepositoryModelUnloadRequest r;
    r.set_model_name(req.Param(0));
    inference::RepositoryModelUnloadResponse out;
    s = stub->RepositoryModelUnload(&context, r, &out);
  }
  Reply(res, s, json::object());
}

// Triton's system shared memory over HTTP: register (a JSON body {"key",
// "offset", "byte_size"}), unregister and status of one region (the path's) or
// of all; admin calls like the repository's.
void SharedMemory(Stub* stub, const AdminAuth& auth, const std::string& action,
                  const HttpRequest& req, HttpResponse* res) {
  grpc::ClientContext context;
  Prepare(req, &context);
  if (absl::Status a = Vouch(auth, req, &context); !a.ok()) return AuthError(res, a);
  const std::string name = req.Param(0);
  grpc::Status s;
  if (action == "register") {
    inference::SystemSharedMemoryRegisterRequest r;
    r.set_name(name);
    const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("key") || !body["key"].is_string() ||
        !body.contains("byte_size") || !body["byte_size"].is_number_unsigned() ||
        (body.contains("offset") && !body["offset"].is_number_unsigned())) {
      return Error(res, 400,
                   "the body must be a JSON object with \"key\" (a string), \"byte_size\" and "
                   "optionally \"offset\" (non-negative integers)");
    }
    r.set_key(body["key"].get<std::string>());
    r.set_byte_size(body["byte_size"].get<uint64_t>());
    r.set_offset(body.value("offset", uint64_t{0}));
    inference::SystemSharedMemoryRegisterResponse out;
    s = stub->SystemSharedMemoryRegister(&context, r, &out);
    return Reply(res, s, json::object());
  }
  if (action == "unregister") {
    inference::SystemSharedMemoryUnregisterRequest r;
    r.set_name(name);
    inference::SystemSharedMemoryUnregisterResponse out;
    s = stub->SystemSharedMemoryUnregister(&context, r, &out);
    return Reply(res, s, json::object());
  }
  inference::SystemSharedMemoryStatusRequest r;
  r.set_name(name);
  inference::SystemSharedMemoryStatusResponse out;
  s = stub->SystemSharedMemoryStatus(&context, r, &out);
  json regions = json::array();
  for (const auto& [n, region] : out.regions()) {
    regions.push_back({{"name", region.name()},
                       {"key", region.key()},
                       {"offset", region.offset()},
                       {"byte_size", region.byte_size()}});
  }
  Reply(res, s, regions);
}

// A handler that first refuses an Authorization header gRPC metadata cannot
// carry (printable ASCII only): passed on to the in-process call, gRPC would
// assert on it and end the process.
HttpHandler Guarded(HttpHandler handler) {
  return [handler = std::move(handler)](const HttpRequest& req, HttpResponse* res) {
    if (const std::string* auth = req.Header("authorization")) {
      for (char c : *auth) {
        if (c < 0x20 || c > 0x7e) {
          return Error(res, 400, "the Authorization header holds a byte outside printable ASCII");
        }
      }
    }
    handler(req, res);
  };
}

// Every route of the gateway, guarded.
void Add(HttpRouter* router, const char* method, const std::string& pattern, HttpRouter::Kind kind,
         HttpHandler handler) {
  router->Add(method, pattern, kind, Guarded(std::move(handler)));
}

}  // namespace

void AddOpenInferenceRoutes(HttpRouter* router, const std::shared_ptr<grpc::Channel>& channel,
                            const AdminAuth& auth, size_t max_message_bytes) {
  std::shared_ptr<Stub> stub = inference::GRPCInferenceService::NewStub(channel);
  RestInferLimits limits;
  limits.max_message_bytes = max_message_bytes;
  using Req = const HttpRequest&;
  using Res = HttpResponse*;
  constexpr auto kQuick = HttpRouter::kQuick;
  constexpr auto kBlocking = HttpRouter::kBlocking;
  Add(router, "GET", "/v2/health/live", kQuick,
      [stub](Req req, Res res) { Health(stub.get(), false, req, res); });
  Add(router, "GET", "/v2/health/ready", kQuick,
      [stub](Req req, Res res) { Health(stub.get(), true, req, res); });
  Add(router, "GET", "/v2", kQuick,
      [stub](Req req, Res res) { ServerMetadata(stub.get(), req, res); });
  // Before /v2/models/{name}: routes match in the order they are added.
  Add(router, "GET", "/v2/models/stats", kQuick,
      [stub](Req req, Res res) { ModelStats(stub.get(), req, res); });
  for (const char* model : {"/v2/models/{name}", "/v2/models/{name}/versions/{n}"}) {
    const std::string m = model;
    Add(router, "GET", m + "/ready", kQuick,
        [stub](Req req, Res res) { ModelReady(stub.get(), req, res); });
    Add(router, "GET", m, kQuick,
        [stub](Req req, Res res) { ModelMetadata(stub.get(), req, res); });
    Add(router, "GET", m + "/config", kQuick,
        [stub](Req req, Res res) { ModelConfig(stub.get(), req, res); });
    Add(router, "GET", m + "/stats", kQuick,
        [stub](Req req, Res res) { ModelStats(stub.get(), req, res); });
    Add(router, "POST", m + "/infer", kBlocking,
        [stub, auth, limits](Req req, Res res) { Infer(stub.get(), auth, limits, req, res); });
  }
  Add(router, "POST", "/v2/repository/index", kQuick,
      [stub](Req req, Res res) { RepositoryIndex(stub.get(), req, res); });
  for (const char* base : {"/v2/systemsharedmemory", "/v2/systemsharedmemory/region/{name}"}) {
    const std::string b = base;
    Add(router, "GET", b + "/status", kQuick,
        [stub, auth](Req req, Res res) { SharedMemory(stub.get(), auth, "status", req, res); });
    for (const char* action : {"register", "unregister"}) {
      if (std::string(action) == "register" && b == "/v2/systemsharedmemory") continue;
      Add(router, "POST", b + "/" + action, kQuick, [stub, auth, action](Req req, Res res) {
        SharedMemory(stub.get(), auth, action, req, res);
      });
    }
  }
  for (bool load : {true, false}) {
    Add(router, "POST",
        load ? "/v2/repository/models/{name}/load" : "/v2/repository/models/{name}/unload",
        kBlocking, [stub, auth, load](Req req, Res res) {
          RepositoryAdmin(stub.get(), auth, load, req, res);
        });
  }
}

}  // namespace modelserver
