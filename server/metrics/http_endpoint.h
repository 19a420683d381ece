#ifndef MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
#define MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace modelserver {

// The HTTP endpoint for Prometheus scrapes, on cpp-httplib (Debian's
// libcpp-httplib): `GET /metrics` (and HEAD) answers `body()` as text/plain
// (exposition format 0.0.4), gzip-compressed when the scraper sends
// `Accept-Encoding: gzip`; `GET /` a short index; other paths 404, other methods
// on /metrics 405.
//
// Bounded against slow or hostile clients: a pool of kThreads connection threads
// (one slow connection holds one of them), 2 s read timeout per receive, 5 s
// write timeout, 8 KiB of headers, 64 KiB of body, keep-alive for 2 s and 16
// requests. Stop() never waits on a client for more than kStopWait: a connection
// thread still blocked then is left to the exiting process.
//
// Why not prometheus-cpp's Exposer: its civetweb starts threads with a small
// fixed stack, and with LibTorch and OpenBLAS loaded their static TLS does not
// fit ("null context when constructing CivetServer"). cpp-httplib uses
// std::thread with the default stack.
//
// Thread-safe; `body` is called on the connection threads (concurrently).
class HttpEndpoint {
 public:
  static constexpr int kThreads = 16;
  static constexpr int kStopWaitSeconds = 3;

  // Binds `address` ("host:port", port 0 picks one) and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& address,
                                                             std::function<std::string()> body);
  // The same, plus the handlers `routes` registers (another protocol's HTTP
  // binding), with request bodies up to `max_body_bytes`; `flag` names the
  // address's flag in errors.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& address, std::function<std::string()> body,
      const std::function<void(httplib::Server*)>& routes, size_t max_body_bytes,
      const std::string& flag);
  ~HttpEndpoint();  // Stop()
  void Stop();
  int port() const { return port_; }

 private:
  HttpEndpoint() = default;

  std::unique_ptr<httplib::Server> server_;  // released, not freed, if Stop times out
  std::thread thread_;                       // runs listen_after_bind
  std::future<void> finished_;               // ready when thread_ returns
  int port_ = 0;
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
