// Integration: what operators rely on, against the real server process (LibTorch
// and OpenBLAS loaded): Prometheus metrics, graceful shutdown, TLS and mutual
// TLS, admin auth and read-only mode, message limits.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/model_client.h"
#include "common/npy.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/store/checkpoint_store.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace fs = std::filesystem;
namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;

std::string Arch() { return testing::ReadFile(FixturesDir() + "/tiny/arch.txt"); }
HostTensor Input() { return *ReadNpy(FixturesDir() + "/tiny/input.npy"); }

class OpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::NewTempDir("ops_store");
    testing::PutVersion(store_, "tiny", 1, FixturesDir() + "/tiny/model_weights.pth",
                        "model_weights.pth", "");
  }
  void Start(std::vector<std::string> extra, ModelClient::Options client = {}) {
    std::vector<std::string> args = {"--store=" + store_, "--model=tiny=" + Arch()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = testing::ServerProcess::Start(args, store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client.target = server_->target();
    client_ = ModelClient::Create(client);
  }
  // Runs a shell command, failing the test when it fails.
  void Sh(const std::string& cmd) {
    std::string out;
    ASSERT_EQ(testing::RunCommand(cmd, &out), 0) << cmd << "\n" << out;
  }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

nlohmann::json Scrape(int port) {
  std::string out;
  const int rc = testing::RunCommand(absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                                                  "/tests/testing/scrape_metrics.py ", port),
                                     &out);
  EXPECT_EQ(rc, 0) << out;
  return rc == 0 ? nlohmann::json::parse(out) : nlohmann::json::object();
}

double Sample(const nlohmann::json& m, const std::string& family, const std::string& name,
              const std::map<std::string, std::string>& labels) {
  if (!m.contains(family)) return -1;
  for (const auto& s : m[family]["samples"]) {
    if (s[0] != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) match &= s[1].contains(k) && s[1][k] == v;
    if (match) return s[2].get<double>();
  }
  return -1;
}

TEST_F(OpsTest, MetricsFromTheRealServerParseWithPrometheusClient) {
  Start({"--max_batch_size=4", "--batch_timeout_us=20000"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  ASSERT_GT(server_->metrics_port(), 0);
  // 6 concurrent one-sample requests (batched), 2 bad ones, one reload, one list.
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      auto c = ModelClient::Create(server_->target());
      HostTensor x = Input();
      x.shape[0] = 1;
      x.data.resize(3 * 32 * 32 * 4);
      v1::PredictResponse r;
      EXPECT_TRUE(c->Predict(MakePredictRequest("tiny", x, 0), &r).ok());
    });
  }
  for (auto& t : threads) t.join();
  v1::PredictResponse r;
  v1::PredictRequest bad = MakePredictRequest("tiny", Input(), 0);
  bad.set_top_k(-1);
  EXPECT_EQ(client_->Predict(bad, &r).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(client_->Predict(bad, &r).error_code(), grpc::INVALID_ARGUMENT);
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("tiny", 1, &lr).ok());
  v1::ListModelsResponse list;
  ASSERT_TRUE(client_->ListModels(&list).ok());

  const nlohmann::json m = Scrape(server_->metrics_port());
  EXPECT_THAT(m["_content_type"].get<std::string>(), HasSubstr("text/plain"));
  const std::map<std::string, std::string> types = {
      {"modelserver_requests", "counter"},
      {"modelserver_request_duration_seconds", "histogram"},
      {"modelserver_queue_duration_seconds", "histogram"},
      {"modelserver_inference_duration_seconds", "histogram"},
      {"modelserver_batch_size", "histogram"},
      {"modelserver_queue_depth", "gauge"},
      {"modelserver_model_loads", "counter"},
      {"modelserver_model_load_duration_seconds", "histogram"},
      {"modelserver_model_serving_version", "gauge"},
      {"modelserver_model_ready", "gauge"},
      {"modelserver_device_memory_bytes", "gauge"},
      {"modelserver_build_info", "gauge"},
      {"modelserver_inflight_requests", "gauge"},
      {"process_cpu_seconds", "counter"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_virtual_memory_bytes", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_start_time_seconds", "gauge"}};
  for (const auto& [family, type] : types) {
    ASSERT_TRUE(m.contains(family)) << family << " missing";
    EXPECT_EQ(m[family]["type"], type) << family;
  }
  // Counts match what was sent.
  EXPECT_EQ(Sample(m, "modelserver_requests", "modelserver_requests_total",
                   {{"model", "tiny"}, {"method", "Predict"}, {"code", "OK"}}),
            6);
  EXPECT_EQ(Sample(m, "modelserver_requests", "modelserver_requests_total",
                   {{"model", "tiny"}, {"method", "Predict"}, {"code", "INVALID_ARGUMENT"}}),
            2);
  EXPECT_EQ(Sample(m, "modelserver_requests", "modelserver_requests_total",
                   {{"model", "tiny"}, {"method", "LoadModel"}, {"code", "OK"}}),
            1);
  EXPECT_EQ(Sample(m, "modelserver_request_duration_seconds",
                   "modelserver_request_duration_seconds_count",
                   {{"model", "tiny"}, {"method", "Predict"}}),
            8);
  // Batches: 6 samples in total (plus the two warm-up passes are not batches).
  EXPECT_EQ(Sample(m, "modelserver_batch_size", "modelserver_batch_size_sum", {{"model", "tiny"}}),
            6);
  const double batches =
      Sample(m, "modelserver_batch_size", "modelserver_batch_size_count", {{"model", "tiny"}});
  EXPECT_GE(batches, 2);  // at most 4 per batch
  EXPECT_LE(batches, 6);
  EXPECT_EQ(Sample(m, "modelserver_inference_duration_seconds",
                   "modelserver_inference_duration_seconds_count", {{"model", "tiny"}}),
            batches);
  EXPECT_EQ(Sample(m, "modelserver_queue_duration_seconds",
                   "modelserver_queue_duration_seconds_count", {{"model", "tiny"}}),
            6);
  // Startup load + LoadModel.
  EXPECT_EQ(Sample(m, "modelserver_model_loads", "modelserver_model_loads_total",
                   {{"model", "tiny"}, {"result", "success"}}),
            2);
  EXPECT_EQ(Sample(m, "modelserver_model_load_duration_seconds",
                   "modelserver_model_load_duration_seconds_count", {{"model", "tiny"}}),
            2);
  EXPECT_EQ(Sample(m, "modelserver_model_serving_version", "modelserver_model_serving_version",
                   {{"model", "tiny"}}),
            1);
  EXPECT_EQ(Sample(m, "modelserver_model_ready", "modelserver_model_ready", {{"model", "tiny"}}),
            1);
  EXPECT_EQ(Sample(m, "modelserver_queue_depth", "modelserver_queue_depth", {{"model", "tiny"}}),
            0);
  // Process series as Prometheus clients export them; build info; nothing in flight
  // but the scrape's own absence of RPCs.
  EXPECT_GT(Sample(m, "process_resident_memory_bytes", "process_resident_memory_bytes", {}),
            50e6);  // LibTorch alone maps more than this
  EXPECT_GT(Sample(m, "process_cpu_seconds", "process_cpu_seconds_total", {}), 0);
  EXPECT_GT(Sample(m, "process_open_fds", "process_open_fds", {}), 3);
  const double start = Sample(m, "process_start_time_seconds", "process_start_time_seconds", {});
  const double now = absl::ToUnixSeconds(absl::Now());
  EXPECT_GT(start, now - 600);
  EXPECT_LE(start, now + 1);
  EXPECT_EQ(Sample(m, "modelserver_build_info", "modelserver_build_info", {{"cuda", "no"}}), 1);
  EXPECT_EQ(Sample(m, "modelserver_inflight_requests", "modelserver_inflight_requests",
                   {{"model", "tiny"}, {"method", "Predict"}}),
            0);
  // The weights' bytes on the device, as the status reports them (tiny: float32).
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("tiny", &st).ok());
  EXPECT_GT(st.parameter_bytes(), 0);
  EXPECT_EQ(Sample(m, "modelserver_device_memory_bytes", "modelserver_device_memory_bytes",
                   {{"model", "tiny"}}),
            static_cast<double>(st.parameter_bytes()));
  // A bucketed histogram, not just count and sum.
  EXPECT_GE(Sample(m, "modelserver_request_duration_seconds",
                   "modelserver_request_duration_seconds_bucket",
                   {{"model", "tiny"}, {"method", "Predict"}, {"le", "+Inf"}}),
            8);
  // No line per request in the log by default.
  EXPECT_THAT(server_->Log(), ::testing::Not(HasSubstr("batch of")));
}

// Names nobody serves never become label values: 100 unknown names through
// Predict, GetModelStatus and LoadModel add no series to /metrics.
TEST_F(OpsTest, UnknownModelNamesAddNoSeries) {
  Start({});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  HostTensor x = testing::FixtureNpy("tiny", "input.npy");
  for (int i = 0; i < 100; ++i) {
    const std::string name = absl::StrCat("ghost", i);
    v1::PredictResponse r;
    EXPECT_EQ(client_->Predict(MakePredictRequest(name, x, 0), &r).error_code(), grpc::NOT_FOUND);
    v1::ModelStatus st;
    EXPECT_EQ(client_->GetModelStatus(name, &st).error_code(), grpc::NOT_FOUND);
    if (i % 10 == 0) {
      v1::LoadModelResponse lr;
      EXPECT_EQ(client_->LoadModel(name, 0, &lr).error_code(), grpc::NOT_FOUND);
    }
  }
  const nlohmann::json m = Scrape(server_->metrics_port());
  int ghosts = 0;
  for (const auto& [family, body] : m.items()) {
    if (family == "_content_type") continue;
    for (const auto& sample : body["samples"]) {
      for (const auto& [k, v] : sample[1].items()) {
        if (v.is_string() && absl::StartsWith(v.get<std::string>(), "ghost")) ++ghosts;
      }
    }
  }
  EXPECT_EQ(ghosts, 0);
  // The refusals are counted, without the names.
  EXPECT_GE(Sample(m, "modelserver_requests", "modelserver_requests_total",
                   {{"model", ""}, {"method", "Predict"}, {"code", "NOT_FOUND"}}),
            100);
}

// A Predict held in the batching queue (a batch of 4 waits up to 5 s for more
// samples, with --batch_wait_when_idle even alone) shows in modelserver_inflight_requests under its
// model and method, and leaves it when answered.
TEST_F(OpsTest, InflightRequestsCarryModelAndMethod) {
  Start({"--max_batch_size=4", "--batch_timeout_us=5000000", "--batch_wait_when_idle"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  HostTensor x = testing::FixtureNpy("tiny", "input.npy");
  const auto samples = static_cast<size_t>(x.shape[0]);
  x.shape[0] = 1;  // one sample: the batch of 4 is not full
  x.data.resize(x.data.size() / samples);
  std::atomic<bool> answered{false};
  std::thread predict([&] {
    v1::PredictResponse r;
    EXPECT_TRUE(client_->Predict(MakePredictRequest("tiny", x, 0), &r).ok());
    answered = true;
  });
  double seen = 0;
  while (!answered.load() && seen < 1) {  // scraped while it waits in the queue
    seen = Sample(Scrape(server_->metrics_port()), "modelserver_inflight_requests",
                  "modelserver_inflight_requests", {{"model", "tiny"}, {"method", "Predict"}});
  }
  predict.join();
  EXPECT_EQ(seen, 1) << "the held Predict was never seen in flight";
  EXPECT_EQ(Sample(Scrape(server_->metrics_port()), "modelserver_inflight_requests",
                   "modelserver_inflight_requests", {{"model", "tiny"}, {"method", "Predict"}}),
            0);
}

TEST_F(OpsTest, SigtermDrainsAnswersEverythingAndExitsZero) {
  Start({"--shutdown_grace_seconds=2", "--batch_timeout_us=1000"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<bool> sigterm_sent{false};
  struct Failure {
    absl::Time sent;
    grpc::Status status;
  };
  absl::Mutex mu;
  std::vector<Failure> failures;
  std::vector<absl::Time> ok_after_sigterm;
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      auto c = ModelClient::Create(server_->target());
      const v1::PredictRequest req = MakePredictRequest("tiny", Input(), 0);
      while (!stop.load()) {
        v1::PredictResponse r;
        const absl::Time sent = absl::Now();
        grpc::Status s = c->Predict(req, &r);
        absl::MutexLock lock(&mu);
        if (s.ok()) {
          ++ok;
          if (sigterm_sent.load()) ok_after_sigterm.push_back(sent);
        } else {
          failures.push_back({sent, s});
          mu.Unlock();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          mu.Lock();
        }
      }
    });
  }
  while (ok.load() < 20) std::this_thread::yield();
  const absl::Time sigterm_at = absl::Now();
  kill(server_->pid(), SIGTERM);
  sigterm_sent = true;
  // Health turns NOT_SERVING while the listener still answers.
  auto health = grpc::health::v1::Health::NewStub(client_->channel());
  bool saw_not_serving = false;
  for (int i = 0; i < 200 && !saw_not_serving; ++i) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    if (!s.ok()) break;  // listener closed before we saw it: fails below
    saw_not_serving = resp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    if (!saw_not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_not_serving);
  auto code = server_->Stop(0, std::chrono::seconds(60));  // signal 0: just wait for the exit
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << server_->Log();
  // When the listener started closing, by the server's own log.
  const std::string log = server_->Log();
  const size_t at = log.find(" INFO grace period over");
  ASSERT_NE(at, std::string::npos) << log;
  const size_t line = log.rfind('\n', at) + 1;
  absl::Time closing;
  std::string err;
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%E3SZ", log.substr(line, at - line),
                              absl::UTCTimeZone(), &closing, &err))
      << err;
  EXPECT_GE(closing - sigterm_at, absl::Milliseconds(1900));  // the grace period served
  // Every request sent before the listener started closing was answered OK; the
  // ones sent after were refused (never computed), as a retryable error.
  for (const Failure& f : failures) {
    EXPECT_GT(f.sent, closing - absl::Milliseconds(50))
        << "a request sent before the drain failed: " << f.status.error_code() << " "
        << f.status.error_message();
    EXPECT_TRUE(f.status.error_code() == grpc::UNAVAILABLE ||
                f.status.error_code() == grpc::CANCELLED)
        << f.status.error_code() << " " << f.status.error_message();
  }
  EXPECT_GT(ok_after_sigterm.size(), 0u) << "nothing was served during the grace period";
  EXPECT_THAT(log, HasSubstr("health NOT_SERVING, draining for 2 s"));
  EXPECT_THAT(log, HasSubstr("model-server stopped"));
}

class TlsTest : public OpsTest {
 protected:
  void SetUp() override {
    OpsTest::SetUp();
    dir_ = store_ + "/pki";
    fs::create_directories(dir_);
    const std::string d = dir_;
    auto ca = [&](const std::string& name) {
      Sh(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=", name,
                      " -keyout ", d, "/", name, ".key -out ", d, "/", name, ".pem"));
    };
    auto leaf = [&](const std::string& name, const std::string& ca_name, const std::string& ext) {
      Sh(absl::StrCat("openssl req -newkey rsa:2048 -nodes -subj /CN=", name, " -keyout ", d, "/",
                      name, ".key -out ", d, "/", name, ".csr"));
      std::ofstream(d + "/" + name + ".ext") << ext << "\n";
      Sh(absl::StrCat("openssl x509 -req -days 2 -in ", d, "/", name, ".csr -CA ", d, "/", ca_name,
                      ".pem -CAkey ", d, "/", ca_name, ".key -CAcreateserial -out ", d, "/", name,
                      ".pem -extfile ", d, "/", name, ".ext"));
    };
    ca("ca");
    ca("otherca");
    leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    leaf("client", "ca", "extendedKeyUsage=clientAuth");
    leaf("intruder", "otherca", "extendedKeyUsage=clientAuth");
  }
  ModelClient::Options Tls(const std::string& cert = "") {
    ModelClient::Options o;
    o.tls_ca = dir_ + "/ca.pem";
    if (!cert.empty()) {
      o.tls_cert = dir_ + "/" + cert + ".pem";
      o.tls_key = dir_ + "/" + cert + ".key";
    }
    o.timeout = std::chrono::seconds(10);
    return o;
  }
  grpc::Status List(ModelClient::Options o) {
    o.target = server_->target();
    v1::ListModelsResponse r;
    return ModelClient::Create(o)->ListModels(&r);
  }
  std::string dir_;
};

TEST_F(TlsTest, TlsAndMutualTls) {
  Start({"--tls_cert=" + dir_ + "/server.pem", "--tls_key=" + dir_ + "/server.key"});
  EXPECT_TRUE(List(Tls()).ok());
  ModelClient::Options plain;
  plain.timeout = std::chrono::seconds(5);
  EXPECT_EQ(List(plain).error_code(), grpc::UNAVAILABLE);  // plaintext to a TLS port
  ModelClient::Options wrong_ca = Tls();
  wrong_ca.tls_ca = dir_ + "/otherca.pem";
  EXPECT_FALSE(List(wrong_ca).ok());  // the server is not trusted
  server_.reset();

  Start({"--tls_cert=" + dir_ + "/server.pem", "--tls_key=" + dir_ + "/server.key",
         "--tls_client_ca=" + dir_ + "/ca.pem"});
  EXPECT_TRUE(List(Tls("client")).ok());
  EXPECT_FALSE(List(Tls()).ok());            // no client certificate
  EXPECT_FALSE(List(Tls("intruder")).ok());  // a certificate from another CA
  // The CLI takes the same flags.
  std::string out;
  EXPECT_EQ(
      testing::RunCommand(absl::StrCat(testing::ClientBinary(), " --target=", server_->target(),
                                       " --tls_ca=", dir_, "/ca.pem --tls_cert=", dir_,
                                       "/client.pem --tls_key=", dir_, "/client.key list"),
                          &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("tiny"));
}

TEST_F(OpsTest, AdminAuthAndReadOnly) {
  const std::string token_file = store_ + "/token";
  std::ofstream(token_file) << "s3cret-token\n";
  Start({"--admin_token_file=" + token_file});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  auto with = [&](const std::string& token) {
    ModelClient::Options o;
    o.target = server_->target();
    o.token = token;
    return ModelClient::Create(o);
  };
  auto none = with(""), wrong = with("guess"), right = with("s3cret-token");
  struct Admin {
    const char* name;
    std::function<grpc::Status(ModelClient*)> call;
  };
  const std::string upload_file = FixturesDir() + "/tiny_v2/model_weights.pth";
  const Admin calls[] = {
      {"SaveModel",
       [](ModelClient* c) {
         v1::SaveModelRequest r;
         r.set_model_name("tiny");
         r.set_format(v1::STATE_DICT);
         v1::SaveModelResponse resp;
         return c->SaveModel(r, &resp);
       }},
      {"LoadModel",
       [](ModelClient* c) {
         v1::LoadModelResponse resp;
         return c->LoadModel("tiny", 1, &resp);
       }},
      {"UploadCheckpoint",
       [&](ModelClient* c) {
         v1::UploadHeader h;
         h.set_model_name("tiny");
         h.set_format(v1::STATE_DICT);
         v1::UploadCheckpointResponse resp;
         return c->Upload(upload_file, h, &resp);
       }},
      {"DownloadCheckpoint",
       [&](ModelClient* c) {
         v1::DownloadHeader h;
         return c->Download("tiny", 1, store_ + "/dl.pth", &h);
       }},
      {"UnloadModel",
       [](ModelClient* c) {
         v1::UnloadModelResponse resp;
         return c->UnloadModel("tiny", &resp);
       }},
  };
  auto store = CheckpointStore::Create({store_, false});
  for (const Admin& a : calls) {
    grpc::Status s = a.call(none.get());
    EXPECT_EQ(s.error_code(), grpc::UNAUTHENTICATED) << a.name << ": " << s.error_message();
    s = a.call(wrong.get());
    EXPECT_EQ(s.error_code(), grpc::PERMISSION_DENIED) << a.name << ": " << s.error_message();
    // Refused calls changed nothing.
    EXPECT_EQ(*(*store)->ListVersions("tiny"), (std::vector<int64_t>{1})) << a.name;
    EXPECT_FALSE(fs::exists(store_ + "/dl.pth"));
  }
  // Open RPCs stay open.
  v1::PredictResponse r;
  EXPECT_TRUE(none->Predict(MakePredictRequest("tiny", Input(), 0), &r).ok());
  v1::ModelStatus st;
  EXPECT_TRUE(none->GetModelStatus("tiny", &st).ok());
  // With the token, each works (SaveModel and UploadCheckpoint add versions 2, 3).
  for (const Admin& a : calls) {
    grpc::Status s = a.call(right.get());
    EXPECT_TRUE(s.ok()) << a.name << ": " << s.error_message();
  }
  EXPECT_EQ(*(*store)->ListVersions("tiny"), (std::vector<int64_t>{1, 2, 3}));
  // The CLI reads the token from a flag, a file and the environment.
  std::string out;
  const std::string base = absl::StrCat(testing::ClientBinary(), " --target=", server_->target());
  EXPECT_EQ(testing::RunCommand(base + " load tiny", &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("authorization"));
  EXPECT_EQ(testing::RunCommand(base + " --token=s3cret-token load tiny", &out), 0) << out;
  EXPECT_EQ(testing::RunCommand(base + " --token_file=" + token_file + " load tiny", &out), 0)
      << out;
  EXPECT_EQ(testing::RunCommand("MODEL_SERVER_TOKEN=s3cret-token " + base + " load tiny", &out), 0)
      << out;
  server_.reset();

  Start({"--admin_token_file=" + token_file, "--read_only"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  right = with("s3cret-token");
  for (const Admin& a : calls) {
    grpc::Status s = a.call(right.get());
    EXPECT_EQ(s.error_code(), grpc::PERMISSION_DENIED) << a.name;
    EXPECT_THAT(s.error_message(), HasSubstr("read-only"));
  }
  EXPECT_EQ(*(*store)->ListVersions("tiny"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(right->Predict(MakePredictRequest("tiny", Input(), 0), &r).ok());
}

TEST_F(OpsTest, MessageLimits) {
  Start({});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  // A 16-image 224x224 batch (9.6 MB) passes with the default limit.
  HostTensor big;
  big.dtype = DType::kFloat32;
  big.shape = {16, 3, 224, 224};
  big.data.assign(static_cast<size_t>(big.NumElements()) * 4, '\0');
  v1::PredictResponse r;
  grpc::Status s = client_->Predict(MakePredictRequest("tiny", big, 0), &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.output().shape(0), 16);
  server_.reset();

  Start({"--max_message_bytes=1000000"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  s = client_->Predict(MakePredictRequest("tiny", big, 0), &r);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("1000000"));
  EXPECT_TRUE(client_->Predict(MakePredictRequest("tiny", Input(), 0), &r).ok());
}

}  // namespace
}  // namespace modelserver
