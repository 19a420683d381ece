#include "server/metrics/http_endpoint.h"

#include <httplib.h>

#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

constexpr char kIndex[] =
    "<html><body><a href=\"/metrics\">/metrics</a> (Prometheus text format)</body></html>\n";

void Configure(httplib::Server* s, std::function<std::string()> body, size_t max_body_bytes) {
  s->new_task_queue = [] { return new httplib::ThreadPool(HttpEndpoint::kThreads); };
  s->set_read_timeout(2, 0);
  s->set_write_timeout(5, 0);
  s->set_keep_alive_timeout(2);
  s->set_keep_alive_max_count(16);
  s->set_payload_max_length(max_body_bytes);
  s->Get("/metrics", [body = std::move(body)](const httplib::Request&, httplib::Response& res) {
    res.set_content(body(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kIndex, "text/html");
  });
  auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content("only GET and HEAD\n", "text/plain");
  };
  s->Post("/metrics", not_allowed);
  s->Put("/metrics", not_allowed);
  s->Delete("/metrics", not_allowed);
  s->Patch("/metrics", not_allowed);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& address, std::function<std::string()> body) {
  return Start(address, std::move(body), nullptr, 64 << 10, "--metrics_listen");
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& address, std::function<std::string()> body,
    const std::function<void(httplib::Server*)>& routes, size_t max_body_bytes,
    const std::string& flag) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->server_ = std::make_unique<httplib::Server>();
  Configure(e->server_.get(), std::move(body), max_body_bytes);
  if (routes) routes(e->server_.get());
  e->port_ = port == 0 ? e->server_->bind_to_any_port(host)
                       : (e->server_->bind_to_port(host, port) ? port : -1);
  if (e->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (", flag, ")"));
  }
  std::promise<void> finished;
  e->finished_ = finished.get_future();
  httplib::Server* server = e->server_.get();
  e->thread_ = std::thread([server, finished = std::move(finished)]() mutable {
    server->listen_after_bind();
    finished.set_value();
  });
  return e;
}

HttpEndpoint::~HttpEndpoint() { Stop(); }

void HttpEndpoint::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();  // closes the listener; connection threads end with their clients
  if (finished_.wait_for(std::chrono::seconds(kStopWaitSeconds)) == std::future_status::ready) {
    thread_.join();
    return;
  }
  // A client still holds a connection thread (a slow or stuck scraper): leave it
  // and the server to the exiting process rather than wait on the client.
  LOG_WARNING("metrics endpoint: a client connection is still open after ", kStopWaitSeconds,
              " s; not waiting for it");
  thread_.detach();
  (void)server_.release();
}

}  // namespace modelserver
