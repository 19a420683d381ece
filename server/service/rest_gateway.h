#ifndef MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_
#define MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_

#include <memory>

#include "server/service/admin_auth.h"

namespace grpc {
class Channel;
}  // namespace grpc
namespace httplib {
class Server;
}  // namespace httplib

namespace modelserver {

// The Open Inference Protocol's HTTP/REST binding as handlers on `server`:
//   GET  /v2/health/live, /v2/health/ready        200, or 400 when not
//   GET  /v2/models/{m}[/versions/{v}]/ready      200 / 400 / 404
//   GET  /v2, /v2/models/{m}[/versions/{v}]       server / model metadata (JSON)
//   POST /v2/models/{m}[/versions/{v}]/infer      JSON tensors ("data", nested or
//        flat, row-major) and the binary-data extension (Inference-Header-Content-Length,
//        "binary_data_size" inputs, "binary_data" / "binary_data_output" outputs)
//   POST /v2/repository/index                     [{"name","version","state","reason"}]
//   POST /v2/repository/models/{m}/load|unload    admin: `auth` against the HTTP
//        peer and its Authorization header
// Each request becomes the same call on the gRPC front door
// (InferenceServiceImpl), made in process through `channel`, so budgets,
// validation, batching and metrics are the gRPC ones; errors are
// {"error": message} with 400 / 401 / 403 / 404 / 429 / 503 / 500 from the code.
// Handlers run on `server`'s connection threads and block for the call.
void AddOpenInferenceRoutes(httplib::Server* server, const std::shared_ptr<grpc::Channel>& channel,
                            const AdminAuth& auth);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_
