// Integration: TorchScript modules (scripted and traced by Python) served from the
// store, reloaded, saved back and read by Python's torch.jit.load.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

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

class TorchScriptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::NewTempDir("ts_store");
    for (const char* name : {"tiny_ts_script", "tiny_ts_trace", "vgg16_ts_script"}) {
      testing::PutVersion(store_, name, 1, FixturesDir() + "/" + name + "/model.pt", "model.pt",
                          "");
    }
    const std::string bytes = testing::ReadFile(FixturesDir() + "/tiny_ts_script/model.pt");
    std::ofstream(store_ + "/truncated.pt", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    testing::PutVersion(store_, "ts_truncated", 1, store_ + "/truncated.pt", "model.pt", "");
    auto server = testing::ServerProcess::Start(
        {"--store=" + store_, "--model=tiny_ts_script", "--model=tiny_ts_trace",
         "--model=vgg16_ts_script", "--model=ts_truncated"},
        store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = ModelClient::Create(server_->target());
    ASSERT_TRUE(testing::WaitForModels(
        *client_, {"tiny_ts_script", "tiny_ts_trace", "vgg16_ts_script", "ts_truncated"},
        std::chrono::seconds(120)));
  }
  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(TorchScriptTest, ScriptedAndTracedModulesMatchPython) {
  for (const char* name : {"tiny_ts_script", "tiny_ts_trace", "vgg16_ts_script"}) {
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus(name, &st).ok());
    EXPECT_EQ(st.state(), v1::READY) << st.last_error();
    EXPECT_EQ(st.format(), v1::TORCHSCRIPT);
    EXPECT_THAT(st.architecture(), StartsWith("__torch__."));  // needs no architecture flag
    v1::PredictResponse r;
    grpc::Status s =
        client_->Predict(MakePredictRequest(name, testing::FixtureNpy(name, "input.npy"), 3), &r);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << name;
    EXPECT_EQ(r.top_k_size(), testing::FixtureNpy(name, "input.npy").shape[0]);  // one per sample
    // The module's own error for an input it cannot take.
    HostTensor tiny;
    tiny.dtype = DType::kFloat32;
    tiny.shape = {1, 3, 1, 1};
    tiny.data.assign(12, '\0');
    s = client_->Predict(MakePredictRequest(name, tiny, 0), &r);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << name;
    EXPECT_THAT(s.error_message(), HasSubstr("TorchScript module rejected the input"));
  }
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("ts_truncated", &st).ok());
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.last_error(), StartsWith("DATA_LOSS"));
}

TEST_F(TorchScriptTest, ReloadAndSaveBackForPython) {
  v1::LoadModelResponse lr;
  for (const char* name : {"tiny_ts_script", "tiny_ts_trace", "vgg16_ts_script"}) {
    ASSERT_TRUE(client_->LoadModel(name, 1, &lr).ok()) << name;
    v1::PredictResponse r;
    ASSERT_TRUE(
        client_->Predict(MakePredictRequest(name, testing::FixtureNpy(name, "input.npy"), 0), &r)
            .ok());
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << name;
  }
  v1::SaveModelRequest req;
  req.set_model_name("tiny_ts_script");
  req.set_format(v1::TORCHSCRIPT);
  v1::SaveModelResponse resp;
  grpc::Status s = client_->SaveModel(req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), 2);
  const std::string saved = store_ + "/tiny_ts_script/2/model.pt";
  const std::string out = store_ + "/py_ts_out.npy";
  std::string text;
  ASSERT_EQ(testing::RunCommand(absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                                             "/tests/testing/run_saved_torchscript.py ", saved, " ",
                                             FixturesDir(), "/tiny_ts_script/input.npy ", out),
                                &text),
            0)
      << text;
  EXPECT_LE(testing::MaxAbsDiff(*ReadNpy(out), testing::FixtureNpy("tiny_ts_script", "output.npy")),
            1e-4);
  // The saved version serves too.
  ASSERT_TRUE(client_->LoadModel("tiny_ts_script", 2, &lr).ok());
  v1::PredictResponse r;
  ASSERT_TRUE(
      client_
          ->Predict(MakePredictRequest("tiny_ts_script",
                                       testing::FixtureNpy("tiny_ts_script", "input.npy"), 0),
                    &r)
          .ok());
  EXPECT_EQ(r.version(), 2);
  // As a state dict: Python loads it into the original class (torchvision's VGG
  // layout here), and the module itself is linked beside it as its architecture
  // template, so the saved version serves too.
  req.set_format(v1::STATE_DICT);
  s = client_->SaveModel(req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), 3);
  const std::string dir = store_ + "/tiny_ts_script/3/";
  EXPECT_TRUE(std::filesystem::exists(dir + "architecture.pt"));
  ASSERT_EQ(testing::RunCommand(absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                                             "/tests/testing/run_saved_state_dict.py ", dir,
                                             "model_weights.pth tiny ", FixturesDir(),
                                             "/tiny_ts_script/input.npy ", out),
                                &text),
            0)
      << text;
  EXPECT_LE(testing::MaxAbsDiff(*ReadNpy(out), testing::FixtureNpy("tiny_ts_script", "output.npy")),
            1e-4);
  ASSERT_TRUE(client_->LoadModel("tiny_ts_script", 3, &lr).ok()) << lr.status().last_error();
  EXPECT_THAT(lr.status().architecture(), ::testing::StartsWith("template "));
}

// Hostile TorchScript: a forward that returns a server file's bytes, and a
// __setstate__ (run by LibTorch while loading) that overwrites a file. Refused by
// default; with --trust_torchscript both attacks work, which shows the refusal is
// what stops them.
class TorchScriptSafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::NewTempDir("ts_safety_store");
    testing::PutVersion(store_, "ts_from_file", 1, FixturesDir() + "/ts_from_file/model.pt",
                        "model.pt", "");
    testing::PutVersion(store_, "ts_setstate", 1, FixturesDir() + "/ts_setstate/model.pt",
                        "model.pt", "");
    ResetMarker();
  }
  void Start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--store=" + store_, "--model=ts_from_file",
                                     "--model=ts_setstate"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = testing::ServerProcess::Start(args, store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = ModelClient::Create(server_->target());
    ASSERT_TRUE(testing::WaitForModels(*client_, {"ts_from_file", "ts_setstate"},
                                       std::chrono::seconds(60)));
  }
  static std::string Marker() {
    return testing::ReadFile(FixturesDir() + "/ts_setstate/marker.bin");
  }
  static void ResetMarker() {
    std::ofstream(FixturesDir() + "/ts_setstate/marker.bin", std::ios::binary)
        << std::string(16, '\0');
  }
  absl::StatusOr<std::string> PredictBytes() {
    HostTensor x;
    x.dtype = DType::kFloat32;
    x.shape = {1, 3};
    x.data.assign(12, '\0');
    v1::PredictResponse r;
    grpc::Status s = client_->Predict(MakePredictRequest("ts_from_file", x, 0), &r);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    std::string bytes;
    const HostTensor out = OutputTensor(r);
    for (size_t i = 0; i + 4 <= out.data.size(); i += 4) {
      float v;
      std::memcpy(&v, out.data.data() + i, 4);
      bytes.push_back(static_cast<char>(v));
    }
    return bytes;
  }
  void TearDown() override { ResetMarker(); }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(TorchScriptSafetyTest, RefusedByDefaultAndNothingRuns) {
  Start({});
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("ts_from_file", &st).ok());
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.last_error(), StartsWith("FAILED_PRECONDITION"));
  EXPECT_THAT(st.last_error(), HasSubstr("aten::from_file"));
  auto bytes = PredictBytes();
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(bytes.status().message()), ::testing::Not(HasSubstr("SECRET")));
  ASSERT_TRUE(client_->GetModelStatus("ts_setstate", &st).ok());
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.last_error(), HasSubstr("__setstate__"));
  EXPECT_EQ(Marker(), std::string(16, '\0'));  // __setstate__ never ran
  // LoadModel gives the same refusal, and the marker stays untouched.
  v1::LoadModelResponse lr;
  grpc::Status s = client_->LoadModel("ts_setstate", 1, &lr);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Marker(), std::string(16, '\0'));
}

TEST_F(TorchScriptSafetyTest, TrustTorchScriptLetsBothAttacksThrough) {
  Start({"--trust_torchscript"});
  auto bytes = PredictBytes();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, testing::ReadFile(FixturesDir() + "/ts_from_file/secret.bin"));
  EXPECT_EQ(Marker(), std::string(16, '\1'));
}

}  // namespace
}  // namespace modelserver
