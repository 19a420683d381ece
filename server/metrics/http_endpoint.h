#ifndef MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
#define MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace modelserver {

// A minimal HTTP/1.1 endpoint for Prometheus scrapes: `GET /metrics` answers
// `body()` as text/plain (exposition format 0.0.4); `GET /` a short index;
// anything else 404/405. One connection at a time, `Connection: close`, bounded
// request size and read timeout.
//
// Why not prometheus-cpp's Exposer: its civetweb starts threads with a small
// fixed stack, and with LibTorch and OpenBLAS loaded their static TLS does not
// fit ("null context when constructing CivetServer"). This endpoint runs on one
// std::thread with the default stack.
//
// Thread-safe; `body` is called on the endpoint's thread.
class HttpEndpoint {
 public:
  // Binds `address` ("host:port", port 0 picks one) and starts serving.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& address,
                                                             std::function<std::string()> body);
  ~HttpEndpoint();  // Stop()
  void Stop();
  int port() const { return port_; }

 private:
  HttpEndpoint() = default;
  void Loop();
  void Serve(int fd);

  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::function<std::string()> body_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

}  // namespace modelserver

#endif  // MODELSERVER_SERVER_METRICS_HTTP_ENDPOINT_H_
