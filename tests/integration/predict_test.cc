// Integration: the real model-server binary on a loopback port, a store of
// checkpoints written by Python, and gRPC calls compared with Python's outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "client/model_client.h"
#include "common/npy.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const char* const kBad[] = {"bad_missing_key",   "bad_wrong_shape", "bad_extra_key",
                            "bad_truncated",     "bad_not_zip",     "bad_os_system",
                            "bad_not_state_dict"};

class PredictTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::filesystem::remove(FixturesDir() + "/pwned_marker");
    store_ = new std::string(testing::NewTempDir("predict_store"));
    auto fx = [](const std::string& name) {
      return FixturesDir() + "/" + name + "/model_weights.pth";
    };
    auto arch = [](const std::string& name) {
      return testing::ReadFile(FixturesDir() + "/" + name + "/arch.txt");
    };
    std::vector<std::string> args = {"--store=" + *store_};
    // With manifests: tiny, vgg16, and tiny with a wrong sha256.
    for (const char* name : {"tiny", "vgg16"}) {
      testing::PutVersion(*store_, name, 1, fx(name), "model_weights.pth",
                          testing::StateDictManifest(fx(name), arch(name)));
      args.push_back(absl::StrCat("--model=", name));
    }
    std::string wrong_sha = testing::StateDictManifest(fx("tiny"), arch("tiny"));
    const size_t at = wrong_sha.find("\"sha256\": \"") + 11;
    wrong_sha[at] = wrong_sha[at] == '0' ? '1' : '0';
    testing::PutVersion(*store_, "bad_sha256", 1, fx("tiny"), "model_weights.pth", wrong_sha);
    args.push_back("--model=bad_sha256");
    // Hand-copied versions without a manifest: the architecture comes from --model.
    std::vector<std::string> plain = {"tiny_bn", "vgg11_bn"};
    plain.insert(plain.end(), std::begin(kBad), std::end(kBad));
    for (const std::string& name : plain) {
      testing::PutVersion(*store_, name, 1, fx(name), "model_weights.pth", "");
      args.push_back(absl::StrCat("--model=", name, "=", arch(name)));
    }
    auto server = testing::ServerProcess::Start(args, *store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    client_ = ModelClient::Create(server_->target()).release();
    std::vector<std::string> all = {"tiny", "vgg16", "bad_sha256"};
    all.insert(all.end(), plain.begin(), plain.end());
    ASSERT_TRUE(testing::WaitForModels(*client_, all, std::chrono::seconds(300))) << server_->Log();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
    delete store_;
  }

  static v1::PredictResponse PredictOk(const v1::PredictRequest& request) {
    v1::PredictResponse response;
    grpc::Status s = client_->Predict(request, &response);
    EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
    return response;
  }
  static v1::PredictRequest FixtureRequest(const std::string& name, int top_k = 0) {
    auto x = ReadNpy(FixturesDir() + "/" + name + "/input.npy");
    EXPECT_TRUE(x.ok()) << x.status();
    return MakePredictRequest(name, *x, top_k);
  }

  static std::string* store_;
  static testing::ServerProcess* server_;
  static ModelClient* client_;
};
std::string* PredictTest::store_ = nullptr;
testing::ServerProcess* PredictTest::server_ = nullptr;
ModelClient* PredictTest::client_ = nullptr;

TEST_F(PredictTest, OutputsMatchPython) {
  for (const char* name : {"tiny", "tiny_bn", "vgg11_bn", "vgg16"}) {
    v1::PredictResponse r = PredictOk(FixtureRequest(name));
    EXPECT_EQ(r.model_name(), name);
    EXPECT_EQ(r.version(), 1);
    auto expected = ReadNpy(FixturesDir() + "/" + name + "/output.npy");
    ASSERT_TRUE(expected.ok());
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), *expected), 1e-4) << name;
  }
}

TEST_F(PredictTest, TopKIsSortedSoftmaxOfTheOutput) {
  v1::PredictResponse r = PredictOk(FixtureRequest("tiny", 3));
  ASSERT_EQ(r.top_k_size(), 4);
  HostTensor out = OutputTensor(r);
  const auto* y = reinterpret_cast<const float*>(out.data.data());
  for (int i = 0; i < 4; ++i) {
    const auto& classes = r.top_k(i).classes();
    ASSERT_EQ(classes.size(), 3);
    const int64_t argmax = std::max_element(y + i * 10, y + i * 10 + 10) - (y + i * 10);
    EXPECT_EQ(classes[0].index(), argmax);
    EXPECT_GE(classes[0].probability(), classes[1].probability());
    EXPECT_GE(classes[1].probability(), classes[2].probability());
    EXPECT_GT(classes[2].probability(), 0.f);
  }
  v1::PredictRequest all = FixtureRequest("tiny", 1000);
  r = PredictOk(all);
  float sum = 0;
  for (const auto& c : r.top_k(0).classes()) sum += c.probability();
  EXPECT_EQ(r.top_k(0).classes_size(), 10);
  EXPECT_NEAR(sum, 1.0f, 1e-5);
}

TEST_F(PredictTest, UnbatchedInput) {
  v1::PredictRequest req = FixtureRequest("tiny");
  req.mutable_input()->clear_shape();
  for (int64_t d : {3, 32, 32}) req.mutable_input()->add_shape(d);
  req.mutable_input()->mutable_data()->resize(3 * 32 * 32 * 4);
  v1::PredictResponse r = PredictOk(req);
  EXPECT_EQ(r.output().shape_size(), 1);
  EXPECT_EQ(r.output().shape(0), 10);
}

TEST_F(PredictTest, BadRequestsGetTheirCodeAndKeepServing) {
  struct Case {
    const char* what;
    std::function<void(v1::PredictRequest*)> mutate;
    grpc::StatusCode code;
    const char* message;
  };
  auto shape = [](std::vector<int64_t> s) {
    return [s](v1::PredictRequest* r) {
      r->mutable_input()->clear_shape();
      int64_t n = 1;
      for (int64_t d : s) {
        r->mutable_input()->add_shape(d);
        n *= d;
      }
      r->mutable_input()->mutable_data()->resize(static_cast<size_t>(n) * 4);
    };
  };
  const Case cases[] = {
      {"rank", shape({3, 32}), grpc::INVALID_ARGUMENT, "has rank 2, expected [N,3,H,W] or [3,H,W]"},
      {"channels", shape({1, 1, 32, 32}), grpc::INVALID_ARGUMENT, "has 1 channels"},
      {"empty", shape({0, 3, 32, 32}), grpc::INVALID_ARGUMENT, "is empty"},
      {"too small", shape({1, 3, 2, 2}), grpc::INVALID_ARGUMENT, "too small"},
      {"dtype", [](v1::PredictRequest* r) { r->mutable_input()->set_dtype(v1::INT32); },
       grpc::INVALID_ARGUMENT, "dtype int32 is not supported, expected float32"},
      {"no dtype",
       [](v1::PredictRequest* r) { r->mutable_input()->set_dtype(v1::DATA_TYPE_UNSPECIFIED); },
       grpc::INVALID_ARGUMENT, "is not set"},
      {"byte length", [](v1::PredictRequest* r) { r->mutable_input()->mutable_data()->pop_back(); },
       grpc::INVALID_ARGUMENT, "expected 49152"},
      {"no input", [](v1::PredictRequest* r) { r->clear_input(); }, grpc::INVALID_ARGUMENT,
       "neither an input tensor nor images"},
      {"top_k", [](v1::PredictRequest* r) { r->set_top_k(-1); }, grpc::INVALID_ARGUMENT,
       "top_k -1 is negative"},
      {"version", [](v1::PredictRequest* r) { r->set_version(-2); }, grpc::INVALID_ARGUMENT,
       "version -2 is negative"},
      {"model name", [](v1::PredictRequest* r) { r->set_model_name("../etc"); },
       grpc::INVALID_ARGUMENT, "model name '../etc' is invalid"},
      {"unknown model", [](v1::PredictRequest* r) { r->set_model_name("nope"); }, grpc::NOT_FOUND,
       "model 'nope' is not loaded"},
      {"unknown version", [](v1::PredictRequest* r) { r->set_version(7); }, grpc::NOT_FOUND,
       "version 7 is not loaded"},
  };
  for (const Case& c : cases) {
    v1::PredictRequest req = FixtureRequest("tiny");
    c.mutate(&req);
    v1::PredictResponse resp;
    grpc::Status s = client_->Predict(req, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.what;
  }
  auto expected = ReadNpy(FixturesDir() + "/tiny/output.npy");
  EXPECT_LE(testing::MaxAbsDiff(OutputTensor(PredictOk(FixtureRequest("tiny"))), *expected), 1e-4);
}

TEST_F(PredictTest, BadCheckpointsFailWithTheirCodeAndNothingRuns) {
  const std::map<std::string, std::pair<std::string, std::string>> expected = {
      {"bad_missing_key", {"FAILED_PRECONDITION", "missing keys: classifier.6.bias"}},
      {"bad_wrong_shape",
       {"FAILED_PRECONDITION", "features.0.weight is [8,3,5,5], expected [8,3,3,3]"}},
      {"bad_extra_key", {"FAILED_PRECONDITION", "unexpected keys: features.99.weight"}},
      {"bad_truncated", {"DATA_LOSS", "truncated"}},
      {"bad_not_zip", {"DATA_LOSS", "not a zip archive"}},
      {"bad_os_system", {"FAILED_PRECONDITION", "global 'posix.system' is not allowed"}},
      {"bad_not_state_dict", {"FAILED_PRECONDITION", "not a tensor"}},
      {"bad_sha256", {"DATA_LOSS", "sha256"}},
  };
  for (const auto& [name, want] : expected) {
    v1::ModelStatus status;
    ASSERT_TRUE(client_->GetModelStatus(name, &status).ok());
    EXPECT_EQ(status.state(), v1::FAILED) << name;
    EXPECT_EQ(status.serving_version(), 0);
    EXPECT_THAT(status.last_error(), StartsWith(want.first + ": ")) << name;
    EXPECT_THAT(status.last_error(), HasSubstr(want.second)) << name;
    v1::PredictRequest req = FixtureRequest("tiny");
    req.set_model_name(name);
    v1::PredictResponse resp;
    grpc::Status s = client_->Predict(req, &resp);
    EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION) << name;
    EXPECT_THAT(s.error_message(), HasSubstr("is FAILED, not READY")) << name;
    EXPECT_THAT(s.error_message(), HasSubstr(want.second)) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(FixturesDir() + "/pwned_marker"));
  PredictOk(FixtureRequest("tiny"));
}

TEST_F(PredictTest, ListAndStatus) {
  v1::ListModelsResponse list;
  ASSERT_TRUE(client_->ListModels(&list).ok());
  std::map<std::string, v1::ModelStatus> by_name;
  for (const auto& m : list.models()) by_name[m.model_name()] = m;
  EXPECT_EQ(by_name.size(), 12u);
  const v1::ModelStatus& tiny = by_name["tiny"];
  EXPECT_EQ(tiny.state(), v1::READY);
  EXPECT_EQ(tiny.serving_version(), 1);
  ASSERT_EQ(tiny.store_versions_size(), 1);
  EXPECT_EQ(tiny.store_versions(0), 1);
  EXPECT_EQ(tiny.format(), v1::STATE_DICT);
  EXPECT_EQ(tiny.architecture(), "vgg:cfg=8-M-16-M:classes=10:hidden=32:pool=2");
  EXPECT_EQ(tiny.device(), "cpu");
  EXPECT_TRUE(tiny.last_error().empty());
  EXPECT_EQ(by_name["vgg16"].architecture(), "vgg16");
  EXPECT_EQ(by_name["vgg11_bn"].architecture(), "vgg11_bn");
  v1::ModelStatus s;
  EXPECT_EQ(client_->GetModelStatus("nope", &s).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(client_->GetModelStatus("a/b", &s).error_code(), grpc::INVALID_ARGUMENT);
}

TEST_F(PredictTest, ClientCli) {
  const std::string out = *store_ + "/cli_out.npy";
  std::string text;
  const std::string base = absl::StrCat(testing::ClientBinary(), " --target=", server_->target());
  ASSERT_EQ(testing::RunCommand(absl::StrCat(base, " predict --model=tiny --top_k=2 --input=",
                                             FixturesDir(), "/tiny/input.npy --output=", out),
                                &text),
            0)
      << text;
  EXPECT_THAT(text, HasSubstr("model tiny version 1: output [4,10]"));
  EXPECT_THAT(text, HasSubstr("sample 3:"));
  auto got = ReadNpy(out);
  auto expected = ReadNpy(FixturesDir() + "/tiny/output.npy");
  ASSERT_TRUE(got.ok() && expected.ok());
  EXPECT_LE(testing::MaxAbsDiff(*got, *expected), 1e-4);
  EXPECT_EQ(testing::RunCommand(base + " predict --model=tiny --shape=2,3,8,8 --top_k=1", &text), 0)
      << text;
  EXPECT_THAT(text, HasSubstr("output [2,10]"));
  EXPECT_EQ(testing::RunCommand(base + " list", &text), 0);
  EXPECT_THAT(text, HasSubstr("tiny"));
  EXPECT_THAT(text, HasSubstr("READY"));
  EXPECT_EQ(testing::RunCommand(base + " status vgg16", &text), 0);
  EXPECT_THAT(text, HasSubstr("arch=vgg16"));
  EXPECT_EQ(testing::RunCommand(base + " predict --model=nope --shape=1,3,8,8", &text), 1);
  EXPECT_THAT(text, HasSubstr("not loaded"));
}

}  // namespace
}  // namespace modelserver
