#ifndef MODELSERVER_SERVER_METRICS_HTTP_REQUEST_H_
#define MODELSERVER_SERVER_METRICS_HTTP_REQUEST_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace modelserver {

// One HTTP request as HttpEndpoint hands it to a handler: read completely,
// within the endpoint's limits. A value type.
struct HttpRequest {
  std::string method;  // as sent: "GET", "POST", ...
  std::string path;    // the target before '?', not percent-decoded
  std::string query;   // after '?', raw
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote_addr;  // "127.0.0.1", "::1"
  int remote_port = 0;
  std::vector<std::string> params;  // the route pattern's {captures}, in order

  // The first header `name` (any case), or null.
  const std::string* Header(absl::string_view name) const {
    for (const auto& [k, v] : headers) {
      if (absl::EqualsIgnoreCase(k, name)) return &v;
    }
    return nullptr;
  }
  // Capture i, or "" when the route has fewer.
  std::string Param(size_t i) const { return i < params.size() ? params[i] : std::string(); }
};

// What a handler answers. A value type.
struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  void Set(int code, std::string content, std::string type) {
    status = code;
    body = std::move(content);
    content_type = std::move(type);
  }
};

// Handlers run on the endpoint's handler threads, never on its event thread;
// they must not throw.
using HttpHandler = std::function<void(const HttpRequest&, HttpResponse*)>;

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_HTTP_REQUEST_H_
