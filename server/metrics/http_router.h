#ifndef MODELSERVER_SERVER_METRICS_HTTP_ROUTER_H_
#define MODELSERVER_SERVER_METRICS_HTTP_ROUTER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/metrics/http_request.h"

namespace modelserver {

// Maps (method, path) to a handler without regular expressions (a hostile path
// costs one pass over its segments). A pattern is '/'-separated segments; a
// segment "{name}" matches one path segment of 1..128 characters of
// [A-Za-z0-9._-] (the store's model-name alphabet), "{n}" 1..19 digits, anything
// else only itself. Captures go to HttpRequest::params in order.
//
//   router.Add("POST", "/v2/models/{name}/versions/{n}/infer", HttpRouter::kBlocking, Infer);
//
// HEAD is answered by the GET route (the endpoint drops the body). Not
// thread-safe while routes are added; const afterwards.
class HttpRouter {
 public:
  // Where a route's handler runs: kQuick for handlers that answer from memory
  // (health, metadata, /metrics), kBlocking for those that wait on a model or a
  // load; each kind has its own threads, so a slow model never delays health.
  enum Kind { kQuick, kBlocking };

  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Kind kind;
    HttpHandler handler;
  };

  // The outcome of Find: `route` when one matched (its captures in `params`);
  // otherwise `allow` lists the methods the path has ("" = no such path: 404).
  struct Match {
    const Route* route = nullptr;
    std::vector<std::string> params;
    std::string allow;
  };

  void Add(std::string method, absl::string_view pattern, Kind kind, HttpHandler handler);
  Match Find(absl::string_view method, absl::string_view path) const;

 private:
  std::vector<Route> routes_;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_HTTP_ROUTER_H_
