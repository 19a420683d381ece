// Integration: any model's state dict served in an architecture template (a
// TorchScript module of the same class) -- Python-made LeNet, CIFAR tutorial net,
// BatchNorm CNN and ResNet-18 -- at startup without a manifest, through upload
// with --architecture_file, hot-swapped under load, refused when it does not fit,
// from state dicts tagged cuda:0 / mps, and saved back in forms Python loads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/model_client.h"
#include "common/npy.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace fs = std::filesystem;
namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;

const char* const kNets[] = {"lenet", "cifarnet", "bncnn", "resnet18"};

std::string Tmpl(const std::string& net, const std::string& file) {
  return FixturesDir() + "/tmpl_" + net + "/" + file;
}

class TemplateTest : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& models) {
    std::vector<std::string> args = {"--store=" + store_};
    for (const std::string& m : models) args.push_back("--model=" + m);
    auto serving = testing::StartServing(args, store_ + "/server.log", models);
    ASSERT_TRUE(serving.ok()) << serving.status();
    server_ = std::move(serving->server);
    client_ = std::move(serving->client);
  }

  // A hand-copied version: weights + template, no manifest.
  void PutTemplateVersion(const std::string& model, int version, const std::string& net,
                          const std::string& weights = "model_weights.pth") {
    testing::PutVersion(store_, model, version, Tmpl(net, weights), "model_weights.pth", "");
    fs::copy_file(Tmpl(net, "architecture.pt"),
                  fs::path(store_) / model / std::to_string(version) / "architecture.pt");
  }

  // max |served - Python| for `net`'s fixture input.
  float Diff(const std::string& model, const std::string& net,
             const std::string& output = "output.npy") {
    auto x = ReadNpy(Tmpl(net, "input.npy"));
    EXPECT_TRUE(x.ok());
    v1::PredictResponse r;
    grpc::Status s = client_->Predict(MakePredictRequest(model, *x, 0), &r);
    EXPECT_TRUE(s.ok()) << model << ": " << s.error_message();
    auto y = ReadNpy(Tmpl(net, output));
    EXPECT_TRUE(y.ok());
    return testing::MaxAbsDiff(OutputTensor(r), *y);
  }

  grpc::Status Upload(const std::string& model, const std::string& weights,
                      const std::string& architecture, v1::UploadCheckpointResponse* resp) {
    v1::UploadHeader h;
    h.set_model_name(model);
    h.set_format(v1::STATE_DICT);
    return client_->Upload(weights, h, resp, 1 << 20, architecture);
  }

  std::string store_ = testing::NewTempDir("template_store");
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(TemplateTest, HandCopiedTemplateVersionsServeAtStartupLikePython) {
  for (const char* net : kNets) PutTemplateVersion(net, 1, net);
  StartServer({kNets, kNets + 4});
  for (const char* net : kNets) {
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus(net, &st).ok());
    EXPECT_EQ(st.state(), v1::READY) << net << ": " << st.last_error();
    EXPECT_EQ(st.format(), v1::STATE_DICT);
    EXPECT_THAT(st.architecture(), HasSubstr("template __torch__.")) << net;
    EXPECT_LE(Diff(net, net), 1e-5) << net;
  }
}

// A module's own error keeps its cause (TorchScript puts it after a traceback).
TEST_F(TemplateTest, ModuleErrorsKeepTheirCause) {
  PutTemplateVersion("lenet", 1, "lenet");
  StartServer({"lenet"});
  HostTensor x;
  x.dtype = DType::kFloat32;
  x.shape = {1, 1, 20, 20};  // convolutions fit, fc1 does not
  x.data.assign(400 * 4, '\0');
  v1::PredictResponse r;
  grpc::Status s = client_->Predict(MakePredictRequest("lenet", x, 0), &r);
  EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("mat1 and mat2 shapes cannot be multiplied"));
  EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("Traceback")));
}

TEST_F(TemplateTest, UploadWithTemplateDeduplicatesAndHotSwapsUnderLoad) {
  StartServer({});
  v1::UploadCheckpointResponse resp;
  grpc::Status s =
      Upload("up", Tmpl("bncnn", "model_weights.pth"), Tmpl("bncnn", "architecture.pt"), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), 1);
  EXPECT_THAT(testing::ReadFile(store_ + "/up/1/manifest.json"),
              HasSubstr("\"architecture_file\": \"architecture.pt\""));
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("up", 0, &lr).ok()) << lr.status().last_error();
  EXPECT_LE(Diff("up", "bncnn"), 1e-5);
  s = Upload("up", Tmpl("bncnn", "v2_model_weights.pth"), Tmpl("bncnn", "architecture.pt"), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.version(), 2);
  // One template on disk for both versions.
  struct stat a, b;
  ASSERT_EQ(stat((store_ + "/up/1/architecture.pt").c_str(), &a), 0);
  ASSERT_EQ(stat((store_ + "/up/2/architecture.pt").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  // Hot swap to v2 while four clients predict: no request fails.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  auto x = ReadNpy(Tmpl("bncnn", "input.npy"));
  ASSERT_TRUE(x.ok());
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      while (!stop) {
        v1::PredictResponse r;
        (client_->Predict(MakePredictRequest("up", *x, 0), &r).ok() ? ok : failed)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(client_->LoadModel("up", 2, &lr).ok()) << lr.status().last_error();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 10);
  EXPECT_LE(Diff("up", "bncnn", "v2_output.npy"), 1e-5);
}

TEST_F(TemplateTest, AStateDictThatDoesNotFitIsRefusedListingWhy) {
  StartServer({});
  v1::UploadCheckpointResponse resp;
  // LeNet's weights in the CIFAR net's template: conv1 has 1 input channel, not 3;
  // fc1 fits; every key exists in both.
  grpc::Status s =
      Upload("bad", Tmpl("lenet", "model_weights.pth"), Tmpl("cifarnet", "architecture.pt"), &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("size mismatch for conv1.weight"));
  EXPECT_THAT(s.error_message(), HasSubstr("[6, 1, 5, 5]"));
  // The BN CNN's weights in LeNet's template: missing and unexpected keys.
  s = Upload("bad", Tmpl("bncnn", "model_weights.pth"), Tmpl("lenet", "architecture.pt"), &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("missing key(s) in the state dict: \"fc1.bias\""));
  EXPECT_THAT(s.error_message(), HasSubstr("unexpected key(s) in the state dict: \"bn1.bias\""));
  EXPECT_FALSE(fs::exists(store_ + "/bad"));  // nothing written
  // Without any architecture, the message names the three ways.
  s = Upload("bad", Tmpl("lenet", "model_weights.pth"), "", &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("--architecture_file arch.pt"));
  EXPECT_THAT(s.error_message(), HasSubstr("TORCHSCRIPT"));
  // A torch.save(model) of a user class says how to make the template.
  v1::UploadHeader h;
  h.set_model_name("bad");
  h.set_format(v1::PICKLED_MODULE);
  s = client_->Upload(FixturesDir() + "/pickled_userclass/model.pth", h, &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("torch.jit.script(model).save('arch.pt')"));
  EXPECT_FALSE(fs::exists(store_ + "/bad"));
}

TEST_F(TemplateTest, StateDictsSavedOnCudaOrMpsLoadOnTheCpu) {
  PutTemplateVersion("from_cuda", 1, "lenet", "cuda_model_weights.pth");
  PutTemplateVersion("from_mps", 1, "lenet", "mps_model_weights.pth");
  StartServer({"from_cuda", "from_mps"});
  for (const char* m : {"from_cuda", "from_mps"}) {
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus(m, &st).ok());
    EXPECT_EQ(st.state(), v1::READY) << m << ": " << st.last_error();
    EXPECT_EQ(st.device(), "cpu");
    EXPECT_LE(Diff(m, "lenet"), 1e-5) << m;
  }
}

TEST_F(TemplateTest, SavedVersionsLoadInPythonAndServeAgain) {
  PutTemplateVersion("lenet", 1, "lenet");
  StartServer({"lenet"});
  for (v1::CheckpointFormat format : {v1::STATE_DICT, v1::TORCHSCRIPT}) {
    v1::SaveModelRequest sr;
    sr.set_model_name("lenet");
    sr.set_format(format);
    sr.set_target_model_name(format == v1::STATE_DICT ? "saved_sd" : "saved_ts");
    v1::SaveModelResponse sresp;
    grpc::Status s = client_->SaveModel(sr, &sresp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const std::string dir = store_ + "/" + sr.target_model_name() + "/1/";
    const std::string py_out = store_ + "/py_out.npy";
    std::string out;
    const std::string cmd =
        format == v1::STATE_DICT
            ? absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                           "/tests/testing/run_saved_state_dict.py ", dir,
                           "model_weights.pth template:lenet ", Tmpl("lenet", "input.npy"), " ",
                           py_out)
            : absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                           "/tests/testing/run_saved_torchscript.py ", dir, "model.pt ",
                           Tmpl("lenet", "input.npy"), " ", py_out);
    ASSERT_EQ(testing::RunCommand(cmd, &out), 0) << out;
    auto py = ReadNpy(py_out);
    auto expected = ReadNpy(Tmpl("lenet", "output.npy"));
    ASSERT_TRUE(py.ok() && expected.ok());
    EXPECT_LE(testing::MaxAbsDiff(*py, *expected), 1e-5);
    // The saved state dict carries its template: it serves as it is.
    if (format == v1::STATE_DICT) {
      EXPECT_TRUE(fs::exists(dir + "architecture.pt"));
    }
    v1::LoadModelResponse lr;
    ASSERT_TRUE(client_->LoadModel(sr.target_model_name(), 0, &lr).ok())
        << lr.status().last_error();
    EXPECT_LE(Diff(sr.target_model_name(), "lenet"), 1e-5);
  }
}

}  // namespace
}  // namespace modelserver
