// Integration: dynamic batching in the real server. Concurrent clients against a
// tiny VGG get the same outputs as unbatched runs, batches really form, the
// queue refuses what does not fit, and `model-client bench` runs clean.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "client/model_client.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;

HostTensor RandomInput(int seed, int64_t n = 1) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = {n, 3, 32, 32};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(t.NumElements()));
  for (float& x : v) x = normal(rng);
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  return t;
}

class BatchingTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& flags) {
    store_ = testing::NewTempDir("batching_store");
    testing::PutVersion(store_, "tiny", 1, FixturesDir() + "/tiny/model_weights.pth",
                        "model_weights.pth", "");
    std::vector<std::string> args = {
        "--store=" + store_, "--model=tiny=" + testing::ReadFile(FixturesDir() + "/tiny/arch.txt"),
        "--log_level=debug"};
    args.insert(args.end(), flags.begin(), flags.end());
    auto server = testing::ServerProcess::Start(args, store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = ModelClient::Create(server_->target());
    ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  }

  // Largest batch the server log reports.
  int64_t LargestBatch() const {
    const std::string log = server_->Log();
    std::regex re("batch of ([0-9]+) samples");
    int64_t largest = 0;
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
         ++it) {
      largest = std::max<int64_t>(largest, std::stoll((*it)[1]));
    }
    return largest;
  }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(BatchingTest, ConcurrentClientsGetTheirUnbatchedOutputs) {
  // A long timeout makes the 32 simultaneous requests share batches of 8.
  Start({"--max_batch_size=8", "--batch_timeout_us=50000", "--max_queue_size=64"});
  constexpr int kClients = 32;
  // Unbatched references: one request at a time, each alone in its batch.
  std::vector<HostTensor> expected(kClients);
  for (int i = 0; i < kClients; ++i) {
    v1::PredictResponse r;
    grpc::Status s = client_->Predict(MakePredictRequest("tiny", RandomInput(i), 0), &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    expected[i] = OutputTensor(r);
  }
  EXPECT_EQ(LargestBatch(), 1);
  for (int round = 0; round < 3; ++round) {
    absl::Barrier* barrier = new absl::Barrier(kClients);
    std::vector<HostTensor> got(kClients);
    std::vector<grpc::Status> status(kClients);
    std::vector<std::thread> threads;
    for (int i = 0; i < kClients; ++i) {
      threads.emplace_back([&, i] {
        auto own = ModelClient::Create(server_->target());  // one connection per client
        const v1::PredictRequest req = MakePredictRequest("tiny", RandomInput(i), 0);
        if (barrier->Block()) delete barrier;
        v1::PredictResponse r;
        status[i] = own->Predict(req, &r);
        got[i] = OutputTensor(r);
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kClients; ++i) {
      ASSERT_TRUE(status[i].ok()) << status[i].error_message();
      ASSERT_EQ(got[i].shape, expected[i].shape);
      // Same outputs; only float rounding may differ (BLAS blocks by batch size).
      EXPECT_LE(testing::MaxAbsDiff(got[i], expected[i]), 1e-5) << "client " << i;
    }
  }
  EXPECT_GT(LargestBatch(), 1) << "no batch formed";
  EXPECT_LE(LargestBatch(), 8);
}

TEST_F(BatchingTest, RequestsLargerThanTheQueueAreInvalid) {
  Start({"--max_batch_size=4", "--max_queue_size=2"});
  v1::PredictResponse r;
  // More samples than the queue can ever hold: no retry would help.
  grpc::Status s = client_->Predict(MakePredictRequest("tiny", RandomInput(1, 3), 0), &r);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("--max_queue_size"));
  s = client_->Predict(MakePredictRequest("tiny", RandomInput(1, 2), 0), &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.output().shape(0), 2);
}

TEST_F(BatchingTest, ExpiredRequestIsAnsweredAndNeverComputed) {
  // A lone request waits for company only with --batch_wait_when_idle.
  Start({"--max_batch_size=8", "--batch_timeout_us=2000000", "--batch_wait_when_idle"});
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::PredictResponse r;
  grpc::Status s =
      client_->stub()->Predict(&ctx, MakePredictRequest("tiny", RandomInput(5), 0), &r);
  EXPECT_EQ(s.error_code(), grpc::DEADLINE_EXCEEDED);
  // A later request is computed; the expired one never was.
  grpc::ClientContext ctx2;
  ctx2.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  s = client_->stub()->Predict(&ctx2, MakePredictRequest("tiny", RandomInput(6), 0), &r);
  EXPECT_TRUE(s.ok()) << s.error_message();
  const std::string log = server_->Log();
  size_t batches = 0;
  for (size_t p = log.find("batch of"); p != std::string::npos; p = log.find("batch of", p + 1)) {
    ++batches;
  }
  EXPECT_EQ(batches, 1u) << log;
}

TEST_F(BatchingTest, ModelClientBenchRunsClean) {
  Start({});
  const std::string json = store_ + "/bench.json";
  std::string out;
  const int rc = testing::RunCommand(
      absl::StrCat(testing::ClientBinary(), " --target=", server_->target(),
                   " bench --model=tiny --shape=3,32,32 --concurrency=1,4 --duration=1s "
                   "--warmup=200ms --batch=2 --json=",
                   json),
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("samples/s"));
  const std::string text = testing::ReadFile(json);
  EXPECT_THAT(text, HasSubstr("\"concurrency\": 1"));
  EXPECT_THAT(text, HasSubstr("\"concurrency\": 4"));
  EXPECT_THAT(text, HasSubstr("\"errors\": {}"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("\"samples\": ([0-9]+)")));
  EXPECT_GT(std::stoll(m[1]), 0);
  // A failing bench exits non-zero.
  EXPECT_EQ(
      testing::RunCommand(absl::StrCat(testing::ClientBinary(), " --target=", server_->target(),
                                       " bench --model=nope --shape=3,32,32 "
                                       "--concurrency=1 --duration=200ms --warmup=0s"),
                          &out),
      1)
      << out;
  EXPECT_THAT(out, HasSubstr("NOT_FOUND"));
}

}  // namespace
}  // namespace modelserver
