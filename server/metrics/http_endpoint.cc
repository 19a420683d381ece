#include "server/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/util/logging.h"

namespace modelserver {
namespace {

constexpr size_t kMaxRequest = 8192;

void SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

std::string Response(int code, const char* reason, const std::string& type,
                     const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& address, std::function<std::string()> body) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port_text.c_str(), &hints, &res) != 0 ||
      res == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve --metrics_listen ", address));
  }
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->body_ = std::move(body);
  e->listen_fd_ = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(e->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool bound = e->listen_fd_ >= 0 &&
                     bind(e->listen_fd_, res->ai_addr, res->ai_addrlen) == 0 &&
                     listen(e->listen_fd_, 64) == 0;
  freeaddrinfo(res);
  if (!bound) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " for metrics: ", std::strerror(errno)));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(e->listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  e->port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (pipe2(e->wake_pipe_, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  e->thread_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

HttpEndpoint::~HttpEndpoint() {
  Stop();
  if (listen_fd_ >= 0) close(listen_fd_);
  for (int fd : wake_pipe_) {
    if (fd >= 0) close(fd);
  }
}

void HttpEndpoint::Stop() {
  if (stopped_.exchange(true)) return;
  if (wake_pipe_[1] >= 0) (void)!write(wake_pipe_[1], "x", 1);
  if (thread_.joinable()) thread_.join();
}

void HttpEndpoint::Loop() {
  while (!stopped_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    Serve(fd);
    close(fd);
  }
}

void HttpEndpoint::Serve(int fd) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string request;
  char buf[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequest) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  if (request.find("\r\n\r\n") == std::string::npos) {
    SendAll(fd, Response(431, "Request Header Fields Too Large", "text/plain", "too large\n"));
    return;
  }
  const std::string line = request.substr(0, request.find("\r\n"));
  const bool get = absl::StartsWith(line, "GET ");
  const bool head = absl::StartsWith(line, "HEAD ");
  if (!get && !head) {
    SendAll(fd, Response(405, "Method Not Allowed", "text/plain", "only GET\n"));
    return;
  }
  const size_t start = line.find(' ') + 1;
  std::string path = line.substr(start, line.find(' ', start) - start);
  path = path.substr(0, path.find('?'));
  std::string resp;
  if (path == "/metrics") {
    resp = Response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body_());
  } else if (path == "/") {
    resp = Response(200, "OK", "text/html", "<a href=\"/metrics\">/metrics</a>\n");
  } else {
    resp = Response(404, "Not Found", "text/plain", "not found; try /metrics\n");
  }
  if (head) resp = resp.substr(0, resp.find("\r\n\r\n") + 4);
  SendAll(fd, resp);
}

}  // namespace modelserver
