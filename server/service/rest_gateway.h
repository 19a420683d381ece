#ifndef MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_
#define MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_

#include <cstddef>
#include <memory>

#include "server/metrics/http_router.h"
#include "server/service/admin_auth.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace modelserver {

// The Open Inference Protocol's HTTP/REST binding as routes on `router`:
//   GET  /v2/health/live, /v2/health/ready        200, or 400 when not
//   GET  /v2/models/{m}[/versions/{v}]/ready      200 / 400 / 404
//   GET  /v2, /v2/models/{m}[/versions/{v}]       server / model metadata (JSON)
//   POST /v2/models/{m}[/versions/{v}]/infer      JSON tensors ("data", nested or
//        flat, row-major) and the binary-data extension (Inference-Header-Content-Length,
//        "binary_data_size" inputs, "binary_data" / "binary_data_output" outputs)
//   GET  /v2/models/{m}[/versions/{v}]/config     Triton's model configuration (JSON)
//   GET  /v2/models[/{m}[/versions/{v}]]/stats    Triton's model statistics (JSON)
//   POST /v2/repository/index                     [{"name","version","state","reason"}]
//   POST /v2/repository/models/{m}/load|unload    admin: `auth` against the HTTP
//        peer and its Authorization header
// Each request becomes the same call on the gRPC front door
// (InferenceServiceImpl), made in process through `channel`, so budgets,
// validation, batching and metrics are the gRPC ones; errors are
// {"error": message} with 400 / 401 / 403 / 404 / 413 / 429 / 503 / 500 from the
// code. An infer for an unknown model or version is 404 before its body is
// parsed; the request built from a body is at most `max_message_bytes` (413).
// Infer and load/unload are HttpRouter::kBlocking routes, the rest kQuick.
void AddOpenInferenceRoutes(HttpRouter* router, const std::shared_ptr<grpc::Channel>& channel,
                            const AdminAuth& auth, size_t max_message_bytes);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_SERVICE_REST_GATEWAY_H_
