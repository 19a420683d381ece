// Integration: `torch.save(model)` files served without Python: torchvision VGGs
// (as native VGGs) and a user's nn.Sequential CNN equal Python's outputs; a user
// class and smuggled calls are refused by name and never run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

const char* const kGood[] = {"pickled_tiny", "pickled_seq", "pickled_vgg16", "pickled_vgg11_bn"};
const char* const kRefused[] = {"pickled_userclass", "pickled_evil_nested", "pickled_evil_setstate",
                                "pickled_evil_eval", "pickled_evil_popen"};

class PickledModuleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::filesystem::remove(FixturesDir() + "/pwned_marker");
    store_ = new std::string(testing::NewTempDir("pickled_store"));
    std::vector<std::string> args = {"--store=" + *store_};
    std::vector<std::string> names;
    for (const char* n : kGood) names.push_back(n);
    for (const char* n : kRefused) names.push_back(n);
    for (const std::string& n : names) {
      testing::PutVersion(*store_, n, 1, FixturesDir() + "/" + n + "/model.pth", "model.pth", "");
      args.push_back("--model=" + n);  // no architecture: the file describes itself
    }
    auto server = testing::ServerProcess::Start(args, *store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    client_ = ModelClient::Create(server_->target()).release();
    ASSERT_TRUE(testing::WaitForModels(*client_, names, std::chrono::seconds(300)))
        << server_->Log();
  }
  static void TearDownTestSuite() {
    delete client_;
    delete server_;
    delete store_;
  }
  static std::string* store_;
  static testing::ServerProcess* server_;
  static ModelClient* client_;
};
std::string* PickledModuleTest::store_ = nullptr;
testing::ServerProcess* PickledModuleTest::server_ = nullptr;
ModelClient* PickledModuleTest::client_ = nullptr;

TEST_F(PickledModuleTest, ServedOutputsMatchPython) {
  for (const char* name : kGood) {
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus(name, &st).ok());
    ASSERT_EQ(st.state(), v1::READY) << name << ": " << st.last_error();
    EXPECT_EQ(st.format(), v1::PICKLED_MODULE);
    v1::PredictResponse r;
    grpc::Status s =
        client_->Predict(MakePredictRequest(name, testing::FixtureNpy(name, "input.npy"), 0), &r);
    ASSERT_TRUE(s.ok()) << name << ": " << s.error_message();
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << name;
  }
  // torchvision VGGs became native VGGs; the Sequential runs as its layers.
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("pickled_vgg16", &st).ok());
  EXPECT_EQ(st.architecture(), "vgg16");
  ASSERT_TRUE(client_->GetModelStatus("pickled_vgg11_bn", &st).ok());
  EXPECT_EQ(st.architecture(), "vgg11_bn");
  ASSERT_TRUE(client_->GetModelStatus("pickled_tiny", &st).ok());
  EXPECT_EQ(st.architecture(), "vgg:cfg=8-M-16-M:classes=10:hidden=32:pool=2");
  ASSERT_TRUE(client_->GetModelStatus("pickled_seq", &st).ok());
  EXPECT_EQ(st.architecture(), "torch.nn.modules.container.Sequential");
}

TEST_F(PickledModuleTest, LoadModelReloadsAndBadInputIsInvalidArgument) {
  v1::LoadModelResponse lr;
  for (const char* name : kGood) {
    ASSERT_TRUE(client_->LoadModel(name, 1, &lr).ok()) << name;
    v1::PredictResponse r;
    ASSERT_TRUE(
        client_->Predict(MakePredictRequest(name, testing::FixtureNpy(name, "input.npy"), 0), &r)
            .ok());
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << name;
  }
  HostTensor x = testing::FixtureNpy("pickled_seq", "input.npy");
  x.shape[1] = 1;  // wrong channel count for the first convolution
  x.data.resize(x.data.size() / 3);
  v1::PredictResponse r;
  grpc::Status s = client_->Predict(MakePredictRequest("pickled_seq", x, 0), &r);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("expected [N,3,H,W]"));
  v1::SaveModelRequest req;
  req.set_model_name("pickled_seq");
  req.set_format(v1::PICKLED_MODULE);
  v1::SaveModelResponse resp;
  EXPECT_EQ(client_->SaveModel(req, &resp).error_code(), grpc::UNIMPLEMENTED);
}

TEST_F(PickledModuleTest, SavedAsPickledModuleLoadsInPythonAsTorchvisionVgg) {
  // A native VGG16 (here: from Python's pickled file) written back the seed's
  // second way, read by Python's torch.load, and served again.
  for (const char* name : {"pickled_vgg11_bn", "pickled_vgg16"}) {
    const std::string target = std::string(name) + "_saved";
    v1::SaveModelRequest req;
    req.set_model_name(name);
    req.set_format(v1::PICKLED_MODULE);
    req.set_target_model_name(target);
    v1::SaveModelResponse resp;
    grpc::Status s = client_->SaveModel(req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const std::string saved = absl::StrCat(*store_, "/", target, "/1/model.pth");
    const std::string out = absl::StrCat(*store_, "/", target, "_py.npy");
    std::string text;
    ASSERT_EQ(testing::RunCommand(absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                                               "/tests/testing/run_saved_module.py ", saved, " ",
                                               FixturesDir(), "/", name, "/input.npy ", out),
                                  &text),
              0)
        << text;
    EXPECT_THAT(text, HasSubstr("ok VGG"));
    EXPECT_LE(testing::MaxAbsDiff(*ReadNpy(out), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << name;
    v1::LoadModelResponse lr;
    ASSERT_TRUE(client_->LoadModel(target, 0, &lr).ok());
    v1::PredictResponse r;
    ASSERT_TRUE(
        client_->Predict(MakePredictRequest(target, testing::FixtureNpy(name, "input.npy"), 0), &r)
            .ok());
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), testing::FixtureNpy(name, "output.npy")), 1e-4)
        << target;
  }
}

TEST_F(PickledModuleTest, UnsafeOrUnknownClassesAreRefusedAndNothingRuns) {
  const std::pair<const char*, const char*> expected[] = {
      {"pickled_userclass", "global '__main__.MyNet' is not allowed"},
      {"pickled_evil_nested", "global 'posix.system' is not allowed"},
      {"pickled_evil_setstate", "global 'posix.system' is not allowed"},
      // Protocol 2 names them the Python 2 way: __builtin__.eval, commands.Popen.
      {"pickled_evil_eval", "eval' is not allowed"},
      {"pickled_evil_popen", "Popen' is not allowed"},
  };
  for (const auto& [name, message] : expected) {
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus(name, &st).ok());
    EXPECT_EQ(st.state(), v1::FAILED) << name;
    EXPECT_THAT(st.last_error(), StartsWith("FAILED_PRECONDITION")) << name;
    EXPECT_THAT(st.last_error(), HasSubstr(message)) << name;
    EXPECT_THAT(st.last_error(), HasSubstr("TORCHSCRIPT")) << name;  // says what to do instead
  }
  EXPECT_FALSE(std::filesystem::exists(FixturesDir() + "/pwned_marker"));
  // A truncated file and one whose tensor record is missing: DATA_LOSS, no crash.
  const std::string bytes = testing::ReadFile(FixturesDir() + "/pickled_tiny/model.pth");
  std::string missing = bytes;
  for (size_t p = missing.find("/data/0"); p != std::string::npos;
       p = missing.find("/data/0", p + 1)) {
    if (p + 7 < missing.size() && missing[p + 7] >= '0' && missing[p + 7] <= '9') continue;
    missing[p + 6] = 'Z';
  }
  const std::pair<const char*, std::string> corrupt[] = {
      {"pickled_truncated", bytes.substr(0, bytes.size() / 2)}, {"pickled_no_record", missing}};
  for (const auto& [name, content] : corrupt) {
    const std::string file = *store_ + "/" + name + ".pth";
    std::ofstream(file, std::ios::binary) << content;
    testing::PutVersion(*store_, name, 1, file, "model.pth", "");
    v1::LoadModelResponse lr;
    grpc::Status s = client_->LoadModel(name, 1, &lr);
    EXPECT_EQ(s.error_code(), grpc::DATA_LOSS) << name << ": " << s.error_message();
  }
  v1::PredictResponse r;
  EXPECT_TRUE(client_
                  ->Predict(MakePredictRequest("pickled_tiny",
                                               testing::FixtureNpy("pickled_tiny", "input.npy"), 0),
                            &r)
                  .ok());
}

}  // namespace
}  // namespace modelserver
