#include "server/metrics/http_endpoint.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "server/metrics/server_metrics.h"

namespace modelserver {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A TCP connection to 127.0.0.1:port (-1 on failure).
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A TCP connection from 127.0.0.`source` (any address of 127/8 is this machine's)
// to 127.0.0.1:port; -1 on failure.
int ConnectFrom(int source, int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(0x7f000000u | static_cast<uint32_t>(source));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Everything `fd` receives until the peer closes or `seconds` pass without data.
std::string ReadAll(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// Sends `request` on a new connection from 127.0.0.`source` and reads the reply,
// giving up after `seconds` without data.
std::string HttpFrom(int source, int port, const std::string& request, int seconds = 5) {
  const int fd = ConnectFrom(source, port);
  if (fd < 0) return "connect failed";
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out = ReadAll(fd, seconds);
  close(fd);
  return out;
}

// Sends `request` (with "Connection: close" added after its first line) and
// reads until the server closes.
std::string Http(int port, std::string request) {
  const size_t eol = request.find("\r\n");
  if (eol != std::string::npos) request.insert(eol + 2, "Connection: close\r\n");
  const int fd = Connect(port);
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(HttpEndpointTest, ServesMetricsAndRefusesTheRest) {
  int calls = 0;
  auto e = HttpEndpoint::Start("127.0.0.1:0", [&] {
    ++calls;
    return std::string("a_metric 1\n");
  });
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  ASSERT_GT(port, 0);
  std::string r = Http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(r, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 11\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\n\r\na_metric 1\n"));
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(Http(port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n"), StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(Http(port, "GET /nope HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Http(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
              StartsWith("HTTP/1.1 405"));
  // Headers over the 16 KiB bound are refused (the connection may also just close).
  const std::string big = Http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a'));
  EXPECT_TRUE(big.empty() || absl::StartsWith(big, "HTTP/1.1 4")) << big.substr(0, 40);
  // Compressed when the scraper asks for it (Prometheus sends Accept-Encoding: gzip).
  const std::string gz = Http(port, "GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n");
  EXPECT_THAT(gz, StartsWith("HTTP/1.1 200 OK"));
  EXPECT_THAT(gz, HasSubstr("Content-Encoding: gzip"));
  EXPECT_EQ(gz.find("a_metric"), std::string::npos);
  const std::string head = Http(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_EQ(head.find("a_metric"), std::string::npos);
  (*e)->Stop();
  EXPECT_EQ(HttpEndpoint::Start("nonsense", [] { return std::string(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A client that sends its request one byte a second holds a connection; scrapes
// keep being answered meanwhile, and Stop() does not wait for it.
TEST(HttpEndpointTest, SlowClientBlocksNeitherScrapesNorStop) {
  auto e = HttpEndpoint::Start("127.0.0.1:0", [] { return std::string("a_metric 1\n"); });
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  const int slow = Connect(port);
  ASSERT_GE(slow, 0);
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0};
  std::thread dribble([&] {
    const std::string request = "GET /metrics HTTP/1.1\r\nX-Slow: " + std::string(4000, 'a');
    for (size_t i = 0; i < request.size() && !stop.load(); ++i) {
      if (send(slow, &request[i], 1, MSG_NOSIGNAL) != 1) break;
      ++sent;
      std::this_thread::sleep_for(std::chrono::milliseconds(i < 3 ? 100 : 1000));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(Http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                StartsWith("HTTP/1.1 200 OK"));
  }
  EXPECT_GE(sent.load(), 3);  // the slow request was still being sent
  (*e)->Stop();               // returns although the slow client is still connected
  stop = true;
  dribble.join();
  close(slow);
}

HttpRouter MetricsRouter() {
  HttpRouter router;
  AddMetricsRoutes(&router, [] { return std::string("a_metric 1\n"); });
  return router;
}

// The header must arrive whole within its deadline: a byte every 100 ms (which
// a per-read timeout would allow forever) is cut off after about a second.
TEST(HttpEndpointTest, HeaderDeadlineIsForTheWholeHeader) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.header_timeout = absl::Seconds(1);
  auto e = HttpEndpoint::Start(o, MetricsRouter());
  ASSERT_TRUE(e.ok()) << e.status();
  const int fd = ConnectFrom(1, (*e)->port());
  ASSERT_GE(fd, 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nX-Slow: " + std::string(200, 'a');
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (size_t i = 0; i < request.size() && !closed; ++i) {
    if (send(fd, &request[i], 1, MSG_NOSIGNAL) != 1) closed = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    char c;
    const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(fd);
  EXPECT_TRUE(closed) << "the slow header was read for " << seconds << " s";
  EXPECT_LT(seconds, 10.0);  // the dribble alone would take 20 s
}

// 1,000 connections that send half a header and stay (from ten other
// addresses, under the per-client cap) hold no thread: every poll from
// 127.0.0.1 is answered within a second.
TEST(HttpEndpointTest, ThousandSlowConnectionsDoNotStopAnswers) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.max_connections_per_client = 100;
  auto e = HttpEndpoint::Start(o, MetricsRouter());
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  std::vector<int> slow;
  for (int i = 0; i < 1000; ++i) {
    const int fd = ConnectFrom(2 + i / 100, port);
    ASSERT_GE(fd, 0) << "connection " << i;
    const std::string half = "GET /metrics HTTP/1.1\r\nX-Slow: a";
    ASSERT_EQ(send(fd, half.data(), half.size(), MSG_NOSIGNAL), static_cast<ssize_t>(half.size()));
    slow.push_back(fd);
  }
  for (int poll = 0; poll < 5; ++poll) {
    EXPECT_THAT(HttpFrom(1, port, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 1),
                StartsWith("HTTP/1.1 200 OK"))
        << "poll " << poll;
    // One more byte on each slow connection between polls.
    for (int fd : slow) (void)!send(fd, "a", 1, MSG_NOSIGNAL);
  }
  EXPECT_GE((*e)->connections(), 1000);
  for (int fd : slow) close(fd);
}

// Past the cap per client address the connection gets a 503 at once; other
// addresses are still served; closing frees the slot.
TEST(HttpEndpointTest, ConnectionCapsPerClientAndInTotal) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.max_connections_per_client = 3;
  o.max_connections = 5;
  auto e = HttpEndpoint::Start(o, MetricsRouter());
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(ConnectFrom(20, port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_THAT(HttpFrom(20, port, "GET /metrics HTTP/1.1\r\n\r\n", 2), StartsWith("HTTP/1.1 503"));
  EXPECT_THAT(HttpFrom(21, port, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
              StartsWith("HTTP/1.1 200"));
  // Total: 3 held + 2 more from another address fill the 5.
  held.push_back(ConnectFrom(22, port));
  held.push_back(ConnectFrom(22, port));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_THAT(HttpFrom(23, port, "GET /metrics HTTP/1.1\r\n\r\n", 2), StartsWith("HTTP/1.1 503"));
  for (int fd : held) close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_THAT(HttpFrom(20, port, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
              StartsWith("HTTP/1.1 200"));
}

// Bodies: a Content-Length over the limit is 413 before the body is read,
// chunked bodies 411, Expect: 100-continue is honoured, keep-alive serves
// several requests on one connection, unknown methods on a known path are 405.
TEST(HttpEndpointTest, BodiesKeepAliveAndMethods) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.max_body_bytes = 1000;
  HttpRouter router = MetricsRouter();
  router.Add("POST", "/echo/{name}", HttpRouter::kBlocking,
             [](const HttpRequest& req, HttpResponse* res) {
               res->Set(200, req.Param(0) + ":" + req.body, "text/plain");
             });
  auto e = HttpEndpoint::Start(o, std::move(router));
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  EXPECT_THAT(HttpFrom(1, port, "POST /echo/m HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
              StartsWith("HTTP/1.1 413"));
  EXPECT_THAT(
      HttpFrom(1, port,
               "POST /echo/m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
      StartsWith("HTTP/1.1 411"));
  const std::string cont =
      HttpFrom(1, port,
               "POST /echo/m HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\nConnection: "
               "close\r\n\r\nabc");
  EXPECT_THAT(cont, StartsWith("HTTP/1.1 100 Continue"));
  EXPECT_THAT(cont, HasSubstr("\r\n\r\nm:abc"));
  // Two requests, pipelined, on one connection.
  const std::string two = HttpFrom(1, port,
                                   "POST /echo/a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
                                   "POST /echo/b HTTP/1.1\r\nContent-Length: 1\r\nConnection: "
                                   "close\r\n\r\ny");
  EXPECT_THAT(two, HasSubstr("a:x"));
  EXPECT_THAT(two, HasSubstr("b:y"));
  const std::string put =
      HttpFrom(1, port, "PUT /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(put, StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(put, HasSubstr("Allow: GET, HEAD"));
  EXPECT_THAT(
      HttpFrom(1, port,
               "POST /echo/bad%2Fname HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
      StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(HttpFrom(1, port, "NOT HTTP AT ALL\r\n\r\n"), StartsWith("HTTP/1.1 400"));
}

// Request bodies held at once share a budget: a second body that does not fit
// while the first is still arriving is 503 at once; a keep-alive connection
// idle past idle_timeout is closed.
TEST(HttpEndpointTest, BodyBudgetAndIdleKeepAlive) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.max_body_bytes = 1000;
  o.max_inflight_body_bytes = 150;
  o.idle_timeout = absl::Seconds(1);
  HttpRouter router = MetricsRouter();
  router.Add("POST", "/echo", HttpRouter::kBlocking, [](const HttpRequest& req, HttpResponse* res) {
    res->Set(200, req.body, "text/plain");
  });
  auto e = HttpEndpoint::Start(o, std::move(router));
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  const int first = ConnectFrom(1, port);  // 100 bytes announced, 10 sent: holds 100
  const std::string head = "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
  ASSERT_GT(send(first, (head + std::string(10, 'a')).data(), head.size() + 10, MSG_NOSIGNAL), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_THAT(HttpFrom(1, port, head + std::string(100, 'b')), StartsWith("HTTP/1.1 503"));
  ASSERT_GT(send(first, std::string(90, 'a').data(), 90, MSG_NOSIGNAL), 0);
  std::string r = ReadAll(first, 3);  // answered, then closed when idle for 1 s
  close(first);
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(r, HasSubstr(std::string(100, 'a')));
  // The budget is free again.
  EXPECT_THAT(
      HttpFrom(1, port, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz"),
      HasSubstr("\r\n\r\nxyz"));
}

// Handlers that wait on a model use their own bounded pool: while it is full,
// more such requests get 503 at once and /metrics is still answered.
TEST(HttpEndpointTest, BusyHandlersAnswer503AndLeaveQuickRoutesFree) {
  HttpEndpoint::Options o;
  o.address = "127.0.0.1:0";
  o.blocking_threads = 1;
  o.max_queued_requests = 1;
  absl::Notification release;
  std::atomic<int> started{0};
  HttpRouter router = MetricsRouter();
  router.Add("POST", "/slow", HttpRouter::kBlocking, [&](const HttpRequest&, HttpResponse* res) {
    ++started;
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
    res->Set(200, "done", "text/plain");
  });
  auto e = HttpEndpoint::Start(o, std::move(router));
  ASSERT_TRUE(e.ok()) << e.status();
  const int port = (*e)->port();
  const std::string slow = "POST /slow HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  std::vector<int> waiting;
  for (int i = 0; i < 2; ++i) {  // one runs, then one queues
    waiting.push_back(ConnectFrom(1, port));
    (void)!send(waiting.back(), slow.data(), slow.size(), MSG_NOSIGNAL);
    for (int j = 0; j < 100 && started.load() == 0; ++j) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_EQ(started.load(), 1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_THAT(HttpFrom(1, port, slow, 2), StartsWith("HTTP/1.1 503"));
  EXPECT_THAT(HttpFrom(1, port, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", 1),
              StartsWith("HTTP/1.1 200"));
  release.Notify();
  for (int fd : waiting) {
    EXPECT_THAT(ReadAll(fd, 5), StartsWith("HTTP/1.1 200"));
    close(fd);
  }
}

TEST(ServerMetricsTest, FamiliesAndLabels) {
  ServerMetrics m;
  m.RecordRequest("vgg16", "Predict", "OK", 0.2);
  m.RecordRequest("vgg16", "Predict", "OK", 0.3);
  m.RecordBatch("vgg16", 4, 0.8);
  m.RecordQueueWait("vgg16", 0.002);
  m.RecordLoad("vgg16", false, 1.5);
  m.set_collect_hook([](ServerMetrics* s) {
    s->SetQueueDepth("vgg16", 3);
    s->SetServing("vgg16", 7, true);
  });
  const std::string text = m.Serialize();
  EXPECT_THAT(
      text,
      HasSubstr("modelserver_requests_total{code=\"OK\",method=\"Predict\",model=\"vgg16\"} 2"));
  EXPECT_THAT(text, HasSubstr("modelserver_batch_size_sum{model=\"vgg16\"} 4"));
  EXPECT_THAT(text,
              HasSubstr("modelserver_model_loads_total{model=\"vgg16\",result=\"failure\"} 1"));
  EXPECT_THAT(text, HasSubstr("modelserver_queue_depth{model=\"vgg16\"} 3"));
  EXPECT_THAT(text, HasSubstr("modelserver_model_serving_version{model=\"vgg16\"} 7"));
  EXPECT_THAT(text, HasSubstr("modelserver_model_ready{model=\"vgg16\"} 1"));
  EXPECT_THAT(text, HasSubstr("# TYPE modelserver_request_duration_seconds histogram"));
}

}  // namespace
}  // namespace modelserver
