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

#include "absl/strings/match.h"
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
  // Headers over the 8 KiB bound are refused (the connection may also just close).
  const std::string big = Http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a'));
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

// A client that sends its request one byte a second holds one connection thread;
// scrapes keep being answered meanwhile, and Stop() does not wait for it.
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
