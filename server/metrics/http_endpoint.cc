#include "server/metrics/http_endpoint.h"

#include <sys/resource.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "server/util/logging.h"
#include "server/util/worker_pool.h"

namespace modelserver {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr char kIndex[] =
    "<html><body><a href=\"/metrics\">/metrics</a> (Prometheus text format)</body></html>\n";

std::chrono::nanoseconds Chrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

// `text` gzip-compressed (RFC 1952), or nullopt if zlib fails.
std::optional<std::string> Gzip(const std::string& text) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return std::nullopt;
  }
  std::string out(deflateBound(&zs, text.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return std::nullopt;
  return out;
}

// Whether an Accept-Encoding value lists gzip (without q=0).
bool AcceptsGzip(const std::string* header) {
  if (header == nullptr) return false;
  for (absl::string_view item : absl::StrSplit(*header, ',')) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ';');
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(parts[0]), "gzip")) continue;
    return parts.size() < 2 || absl::StripAsciiWhitespace(parts[1]) != "q=0";
  }
  return false;
}

// The address a client connects from, IPv4-mapped IPv6 shown as IPv4.
std::string ClientAddress(const tcp::endpoint& e) {
  asio::ip::address a = e.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  }
  return a.to_string();
}

class Session;

}  // namespace

// The event loop, the handler pools and the connection accounting. Members in
// destruction order: the pools join first (their threads post to ioc), then the
// acceptor, then ioc (whose pending handlers may hold sessions, which release
// their count under mu).
class HttpEndpoint::Impl {
 public:
  Impl(Options o, HttpRouter r)
      : options(std::move(o)),
        router(std::move(r)),
        acceptor(ioc),
        retry(ioc),
        quick(options.quick_threads, static_cast<size_t>(options.max_queued_requests)),
        blocking(options.blocking_threads, static_cast<size_t>(options.max_queued_requests)) {}

  void Accept();
  void OnAccept(tcp::socket socket);
  void Release(Session* s, const std::string& client);
  void CloseAll();

  const Options options;
  const HttpRouter router;
  std::atomic<bool> stopping{false};
  std::atomic<size_t> body_bytes{0};  // bodies read or being handled, reserved at the header

  mutable absl::Mutex mu;
  int connections ABSL_GUARDED_BY(mu) = 0;
  std::map<std::string, int> per_client ABSL_GUARDED_BY(mu);
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions ABSL_GUARDED_BY(mu);

  asio::io_context ioc{1};
  tcp::acceptor acceptor;  // event thread only
  asio::steady_timer retry;
  WorkerPool quick;
  WorkerPool blocking;
  std::thread io_thread;
};

namespace {

// One connection: header, body, handler, response, then the next request (or
// close). Every step but the handler runs on the event thread; the handler's
// task holds the session until its response is posted back.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpEndpoint::Impl* impl, tcp::socket socket, std::string client, int port)
      : impl_(impl),
        stream_(std::move(socket)),
        buffer_(impl->options.max_header_bytes + (64 << 10)),
        client_(std::move(client)),
        port_(port) {}
  ~Session() {
    Unreserve();
    impl_->Release(this, client_);
  }

  void Start() { ReadHeader(); }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  const HttpEndpoint::Options& options() const { return impl_->options; }

  void Unreserve() {
    if (reserved_ > 0) impl_->body_bytes.fetch_sub(reserved_);
    reserved_ = 0;
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(options().max_header_bytes));
    parser_->body_limit(static_cast<std::uint64_t>(options().max_body_bytes));
    stream_.expires_after(Chrono(options().header_timeout));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return Fail(
          431, absl::StrCat("the request header is over ", options().max_header_bytes, " bytes\n"));
    }
    if (ec == http::error::body_limit) {
      return Fail(413, absl::StrCat("the body is over the limit of ", options().max_body_bytes,
                                    " bytes\n"));
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) return Close();
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category()) {
      return Fail(400, absl::StrCat("malformed request: ", ec.message(), "\n"));
    }
    if (ec) return Close();  // a deadline passed or the peer left
    if (parser_->chunked()) {
      return Fail(411, "send the body with a Content-Length (chunked bodies are not accepted)\n");
    }
    const size_t length = static_cast<size_t>(parser_->content_length().value_or(0));
    if (length > options().max_body_bytes) {
      return Fail(413, absl::StrCat("the body is ", length, " bytes, over the limit of ",
                                    options().max_body_bytes, "\n"));
    }
    if (impl_->body_bytes.fetch_add(length) + length > options().max_inflight_body_bytes) {
      impl_->body_bytes.fetch_sub(length);
      return Fail(503, "the server holds too many request bodies at once; retry later\n");
    }
    reserved_ = length;
    if (parser_->is_done()) return Dispatch();
    const auto& req = parser_->get();
    if (absl::EqualsIgnoreCase(std::string(req[http::field::expect]), "100-continue")) {
      static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(Chrono(options().write_timeout));
      return asio::async_write(stream_, asio::buffer(kContinue, sizeof(kContinue) - 1),
                               [self = shared_from_this()](beast::error_code e, size_t) {
                                 if (e) return self->Close();
                                 self->ReadBody();
                               });
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_after(Chrono(options().body_timeout));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec == http::error::body_limit) {
                         return self->Fail(413, "the body is over the limit\n");
                       }
                       if (ec) return self->Close();
                       self->Dispatch();
                     });
  }

  void Dispatch() {
    stream_.expires_never();
    http::request<http::string_body> msg = parser_->release();
    parser_.reset();
    HttpRequest r;
    r.method = std::string(msg.method_string());
    const std::string target(msg.target());
    const size_t q = target.find('?');
    r.path = target.substr(0, q);
    if (q != std::string::npos) r.query = target.substr(q + 1);
    for (const auto& field : msg) {
      r.headers.emplace_back(absl::AsciiStrToLower(std::string(field.name_string())),
                             std::string(field.value()));
    }
    r.body = std::move(msg.body());
    r.remote_addr = client_;
    r.remote_port = port_;
    const bool head = msg.method() == http::verb::head;
    const bool keep = msg.keep_alive() && ++served_ < options().max_requests_per_connection &&
                      !impl_->stopping.load();
    HttpRouter::Match m = impl_->router.Find(r.method, r.path);
    if (m.route == nullptr) {
      HttpResponse res;
      if (m.allow.empty()) {
        res.Set(404, "not found\n", "text/plain; charset=utf-8");
      } else {
        res.Set(405, absl::StrCat("allowed: ", m.allow, "\n"), "text/plain; charset=utf-8");
        res.headers.emplace_back("Allow", m.allow);
      }
      return Respond(std::move(res), head, keep);
    }
    r.params = std::move(m.params);
    const HttpRouter::Route* route = m.route;
    WorkerPool& pool = route->kind == HttpRouter::kQuick ? impl_->quick : impl_->blocking;
    auto task = [self = shared_from_this(), route, r = std::move(r), head, keep]() mutable {
      HttpResponse res;
      try {
        route->handler(r, &res);
      } catch (const std::exception& e) {
        LOG_ERROR("HTTP handler for ", r.path, " threw: ", e.what());
        res = HttpResponse();
        res.Set(500, "internal error\n", "text/plain; charset=utf-8");
      } catch (...) {  // nothing leaves a handler thread
        LOG_ERROR("HTTP handler for ", r.path, " threw a non-standard exception");
        res = HttpResponse();
        res.Set(500, "internal error\n", "text/plain; charset=utf-8");
      }
      r = HttpRequest();  // the body goes now, not when the session ends
      HttpEndpoint::Impl* impl = self->impl_;
      asio::post(impl->ioc, [self = std::move(self), res = std::move(res), head, keep]() mutable {
        self->Respond(std::move(res), head, keep);
      });
    };
    if (!pool.Post(std::move(task))) {
      Fail(503, "the server is busy: too many requests wait for a handler; retry later\n");
    }
  }

  // An endpoint-level refusal; the connection closes after it (the rest of the
  // request is not read).
  void Fail(int status, std::string text) {
    HttpResponse res;
    res.Set(status, std::move(text), "text/plain; charset=utf-8");
    Respond(std::move(res), /*head=*/false, /*keep=*/false);
  }

  template <class Body>
  void Fill(http::response<Body>* msg, HttpResponse& res, bool keep) {
    msg->set(http::field::server, "model-server");
    msg->set(http::field::content_type, res.content_type);
    for (const auto& [k, v] : res.headers) msg->set(k, v);
    msg->keep_alive(keep);
  }

  void Respond(HttpResponse res, bool head, bool keep) {
    Unreserve();
    if (impl_->stopping.load()) keep = false;
    const auto status = static_cast<http::status>(res.status);
    if (head) {
      auto msg = std::make_shared<http::response<http::empty_body>>(status, 11);
      Fill(msg.get(), res, keep);
      msg->content_length(res.body.size());
      return Send(std::move(msg), keep);
    }
    auto msg = std::make_shared<http::response<http::string_body>>(status, 11);
    Fill(msg.get(), res, keep);
    msg->body() = std::move(res.body);
    msg->prepare_payload();
    Send(std::move(msg), keep);
  }

  template <class Message>
  void Send(std::shared_ptr<Message> msg, bool keep) {
    stream_.expires_after(Chrono(options().write_timeout));
    Message& m = *msg;
    http::async_write(
        stream_, m,
        [self = shared_from_this(), msg = std::move(msg), keep](beast::error_code ec, size_t) {
          if (ec || !keep) return self->Close();
          self->WaitNext();
        });
  }

  // Keep-alive: the next request's first bytes within idle_timeout, then its
  // whole header within header_timeout.
  void WaitNext() {
    if (impl_->stopping.load()) return Close();
    if (buffer_.size() > 0) return ReadHeader();  // pipelined
    stream_.expires_after(Chrono(options().idle_timeout));
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  HttpEndpoint::Impl* const impl_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const std::string client_;
  const int port_;
  int served_ = 0;
  size_t reserved_ = 0;
};

}  // namespace

void HttpEndpoint::Impl::Accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping.load()) return;
    if (ec) {  // out of descriptors and the like: try again shortly, never spin
      retry.expires_after(std::chrono::milliseconds(100));
      retry.async_wait([this](beast::error_code e) {
        if (!e) Accept();
      });
      return;
    }
    OnAccept(std::move(socket));
    Accept();
  });
}

void HttpEndpoint::Impl::OnAccept(tcp::socket socket) {
  beast::error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return;
  std::string client = ClientAddress(peer);
  {
    absl::MutexLock lock(&mu);
    int& mine = per_client[client];
    if (connections < options.max_connections && mine < options.max_connections_per_client) {
      ++connections;
      ++mine;
    } else {
      if (mine == 0) per_client.erase(client);
      client.clear();
    }
  }
  if (client.empty()) {  // over a cap: say so without waiting on the client, then close
    static const char kBusy[] =
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    socket.non_blocking(true, ec);
    socket.write_some(asio::buffer(kBusy, sizeof(kBusy) - 1), ec);
    socket.close(ec);
    return;
  }
  auto s = std::make_shared<Session>(this, std::move(socket), client, peer.port());
  {
    absl::MutexLock lock(&mu);
    sessions[s.get()] = s;
  }
  s->Start();
}

void HttpEndpoint::Impl::Release(Session* s, const std::string& client) {
  absl::MutexLock lock(&mu);
  sessions.erase(s);
  --connections;
  auto it = per_client.find(client);
  if (it != per_client.end() && --it->second <= 0) per_client.erase(it);
}

void HttpEndpoint::Impl::CloseAll() {
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&mu);
    for (auto& [ptr, weak] : sessions) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) s->Close();
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& address, std::function<std::string()> body) {
  HttpRouter router;
  AddMetricsRoutes(&router, std::move(body));
  Options o;
  o.address = address;
  o.blocking_threads = 1;
  return Start(std::move(o), std::move(router));
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(Options options,
                                                                  HttpRouter routes) {
  const std::string& address = options.address;
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.flag, " '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) host = "0.0.0.0";
  // Each connection holds a descriptor: keep the cap below what the process may open.
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    const int fit = static_cast<int>(std::max<rlim_t>(nofile.rlim_cur, 512) / 2);
    if (options.max_connections > fit) {
      LOG_WARNING(options.flag, ": ", options.max_connections, " connections do not fit the ",
                  nofile.rlim_cur, " descriptors this process may open; capping at ", fit);
      options.max_connections = fit;
    }
  }
  std::unique_ptr<HttpEndpoint> e(new HttpEndpoint());
  e->impl_ = std::make_unique<Impl>(std::move(options), std::move(routes));
  Impl* impl = e->impl_.get();
  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (", impl->options.flag, "): ", ec.message()));
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (", impl->options.flag, "): ", ec.message()));
  }
  e->port_ = impl->acceptor.local_endpoint().port();
  impl->Accept();
  impl->io_thread = std::thread([impl] {
    // Handlers on the event thread only move bytes; none throws, but an Asio
    // error must not end the process.
    while (true) {
      try {
        impl->ioc.run();
        return;
      } catch (const std::exception& ex) {
        LOG_ERROR("HTTP event loop: ", ex.what());
      }
    }
  });
  return e;
}

HttpEndpoint::~HttpEndpoint() { Stop(); }

int HttpEndpoint::connections() const {
  if (impl_ == nullptr) return 0;
  absl::MutexLock lock(&impl_->mu);
  return impl_->connections;
}

void HttpEndpoint::Stop() {
  if (impl_ == nullptr) return;
  Impl* impl = impl_.get();
  impl->stopping.store(true);
  asio::post(impl->ioc, [impl] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    impl->retry.cancel();
    impl->CloseAll();
  });
  std::promise<void> done;
  std::future<void> stopped = done.get_future();
  std::thread stopper([impl, done = std::move(done)]() mutable {
    impl->quick.Shutdown();  // running handlers finish; their replies meet closed sockets
    impl->blocking.Shutdown();
    impl->ioc.stop();
    if (impl->io_thread.joinable()) impl->io_thread.join();
    done.set_value();
  });
  if (stopped.wait_for(std::chrono::seconds(kStopWaitSeconds)) == std::future_status::ready) {
    stopper.join();
    impl_.reset();
    return;
  }
  // A handler is still running (a call that outlived the drain): leave it and the
  // endpoint to the exiting process rather than wait on it.
  LOG_WARNING(impl->options.flag, ": a request handler is still running after ", kStopWaitSeconds,
              " s; not waiting for it");
  stopper.detach();
  (void)impl_.release();
}

void AddMetricsRoutes(HttpRouter* router, std::function<std::string()> body) {
  router->Add("GET", "/metrics", HttpRouter::kQuick,
              [body = std::move(body)](const HttpRequest& req, HttpResponse* res) {
                std::string text = body();
                if (AcceptsGzip(req.Header("accept-encoding"))) {
                  if (std::optional<std::string> gz = Gzip(text)) {
                    text = *std::move(gz);
                    res->headers.emplace_back("Content-Encoding", "gzip");
                  }
                }
                res->Set(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8");
              });
  router->Add("GET", "/", HttpRouter::kQuick,
              [](const HttpRequest&, HttpResponse* res) { res->Set(200, kIndex, "text/html"); });
}

}  // namespace modelserver
