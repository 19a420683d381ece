#ifndef MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
#define MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/metrics/http_router.h"

namespace modelserver {

// An HTTP/1.1 server for a port the world can reach (the REST port and
// /metrics), on Boost.Beast over Asio: one event thread holds every connection,
// so a slow or idle client costs a socket and a small buffer, never a thread.
// Bounded against hostile clients, all from Options:
//   - the whole request header must arrive within header_timeout of the
//     connection's start (or of the previous response), the whole body within
//     body_timeout: deadlines, not per-read timeouts, so one byte a second does
//     not keep a connection;
//   - a keep-alive connection waits idle_timeout for its next request;
//   - connections in total and per client address are capped (over the cap the
//     connection gets a 503 and is closed at once);
//   - header and body sizes are capped (431 / 413); a body without
//     Content-Length (chunked) is refused (411); the bodies being read or handled
//     at once share max_inflight_body_bytes (503 past it);
//   - handlers run on two bounded pools (HttpRouter::kQuick for health, metadata
//     and /metrics; kBlocking for inference and admin), so busy models never
//     delay health; a full pool answers 503 at once.
// Handlers never run on the event thread. Stop() never waits on a client or a
// handler for more than kStopWaitSeconds.
//
// Why Beast: it is a maintained HTTP parser built and fuzzed for hostile input
// (Boost, Debian 12 ships 1.74 and Debian 13 1.83, header-only), and Asio gives
// whole-operation deadlines (beast::tcp_stream::expires_after) and full control
// of accepting; libmicrohttpd has only per-read inactivity timeouts, Debian 12's
// libevent 2.1 has no connection cap, drogon is not packaged for Debian 12.
//
// Thread-safe.
class HttpEndpoint {
 public:
  static constexpr int kStopWaitSeconds = 3;

  struct Options {
    std::string address;                    // host:port; port 0 picks one
    std::string flag = "--metrics_listen";  // names the address in errors
    size_t max_header_bytes = 16 << 10;
    size_t max_body_bytes = 64 << 10;
    size_t max_inflight_body_bytes = size_t{256} << 20;
    absl::Duration header_timeout = absl::Seconds(10);
    absl::Duration body_timeout = absl::Seconds(60);
    absl::Duration idle_timeout = absl::Seconds(5);
    absl::Duration write_timeout = absl::Seconds(30);
    int max_connections = 4096;
    int max_connections_per_client = 256;
    int max_requests_per_connection = 1000;
    int quick_threads = 2;
    int blocking_threads = 16;
    int max_queued_requests = 256;  // per pool, waiting for a thread
  };

  // Binds `options.address` and starts serving `routes`. UNAVAILABLE when the
  // address cannot be bound, INVALID_ARGUMENT when it is not host:port.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(Options options, HttpRouter routes);
  // A metrics-only endpoint (AddMetricsRoutes) with default options.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& address,
                                                             std::function<std::string()> body);
  ~HttpEndpoint();  // Stop()
  void Stop();
  int port() const { return port_; }
  // Connections open now (for tests and logs).
  int connections() const;

  class Impl;

 private:
  HttpEndpoint() = default;

  std::unique_ptr<Impl> impl_;  // released, not freed, if Stop times out
  int port_ = 0;
};

// The Prometheus routes: GET/HEAD /metrics answers `body()` as text/plain
// (exposition format 0.0.4), gzip-compressed when the scraper sends
// `Accept-Encoding: gzip`; GET / a short index; other methods on /metrics 405.
void AddMetricsRoutes(HttpRouter* router, std::function<std::string()> body);

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
