// Integration: health (liveness, readiness, per model), server reflection, and a
// clean exit on SIGTERM, against the real model-server binary.
#include <gmock/gmock.h>
#include <google/protobuf/descriptor.pb.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/model_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc_compat/reflection.grpc.pb.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using HealthResponse = grpc::health::v1::HealthCheckResponse;
using testing::FixturesDir;

grpc::Status Check(grpc::Channel* channel, const std::string& service,
                   HealthResponse::ServingStatus* status) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::ChannelInterface>(channel, [](grpc::ChannelInterface*) {}));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  HealthResponse resp;
  grpc::Status s = stub->Check(&ctx, req, &resp);
  *status = resp.status();
  return s;
}

class HealthReflectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::NewTempDir("health_store");
    const std::string file = FixturesDir() + "/tiny/model_weights.pth";
    testing::PutVersion(store_, "tiny", 1, file, "model_weights.pth", "");
    const std::string arch = testing::ReadFile(FixturesDir() + "/tiny/arch.txt");
    auto server = testing::ServerProcess::Start({"--store=" + store_, "--model=tiny=" + arch},
                                                store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client_ = ModelClient::Create(server_->target());
    ASSERT_TRUE(testing::WaitForModels(*client_, {"tiny"}, std::chrono::seconds(60)));
  }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(HealthReflectionTest, HealthNames) {
  grpc::Channel* ch = client_->channel().get();
  HealthResponse::ServingStatus st;
  ASSERT_TRUE(Check(ch, "", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
  // Readiness turns SERVING once every startup model is READY (it already is).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    ASSERT_TRUE(Check(ch, "modelserving.v1.ModelService", &st).ok());
    if (st == HealthResponse::SERVING) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(st, HealthResponse::SERVING);
  ASSERT_TRUE(Check(ch, "tiny", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
  EXPECT_EQ(Check(ch, "never-loaded", &st).error_code(), grpc::NOT_FOUND);
}

// Readiness follows the live state: unloading the startup model turns it
// NOT_SERVING, loading it again SERVING (set synchronously by the registry).
TEST_F(HealthReflectionTest, ReadinessFollowsUnloadAndLoad) {
  grpc::Channel* ch = client_->channel().get();
  HealthResponse::ServingStatus st;
  modelserving::v1::UnloadModelResponse ur;
  ASSERT_TRUE(client_->UnloadModel("tiny", &ur).ok());
  ASSERT_TRUE(Check(ch, "modelserving.v1.ModelService", &st).ok());
  EXPECT_EQ(st, HealthResponse::NOT_SERVING);
  ASSERT_TRUE(Check(ch, "tiny", &st).ok());
  EXPECT_EQ(st, HealthResponse::NOT_SERVING);
  modelserving::v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("tiny", 0, &lr).ok());
  ASSERT_TRUE(Check(ch, "modelserving.v1.ModelService", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
  ASSERT_TRUE(Check(ch, "tiny", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
}

TEST_F(HealthReflectionTest, ReadinessWaitsForEveryStartupModel) {
  // A second server whose second startup model cannot load: live, never ready.
  const std::string store = testing::NewTempDir("health_failing");
  testing::PutVersion(store, "tiny", 1, FixturesDir() + "/tiny/model_weights.pth",
                      "model_weights.pth", "");
  testing::PutVersion(store, "broken", 1, FixturesDir() + "/bad_truncated/model_weights.pth",
                      "model_weights.pth", "");
  const std::string arch = testing::ReadFile(FixturesDir() + "/tiny/arch.txt");
  auto server = testing::ServerProcess::Start(
      {"--store=" + store, "--model=tiny=" + arch, "--model=broken=" + arch},
      store + "/server.log");
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = ModelClient::Create((*server)->target());
  ASSERT_TRUE(testing::WaitForModels(*client, {"tiny", "broken"}, std::chrono::seconds(60)));
  HealthResponse::ServingStatus st;
  grpc::Channel* ch = client->channel().get();
  ASSERT_TRUE(Check(ch, "", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
  ASSERT_TRUE(Check(ch, "modelserving.v1.ModelService", &st).ok());
  EXPECT_EQ(st, HealthResponse::NOT_SERVING);
  ASSERT_TRUE(Check(ch, "tiny", &st).ok());
  EXPECT_EQ(st, HealthResponse::SERVING);
  ASSERT_TRUE(Check(ch, "broken", &st).ok());
  EXPECT_EQ(st, HealthResponse::NOT_SERVING);
}

TEST_F(HealthReflectionTest, ReflectionListsAndDescribesTheService) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(client_->channel());
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::vector<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.push_back(s.name());
  EXPECT_THAT(names, Contains("modelserving.v1.ModelService"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));

  req.set_file_containing_symbol("modelserving.v1.ModelService");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_GE(resp.file_descriptor_response().file_descriptor_proto_size(), 1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(resp.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "modelserving/v1/model_service.proto");
  EXPECT_EQ(file.package(), "modelserving.v1");
  ASSERT_EQ(file.service_size(), 1);
  std::vector<std::string> methods;
  for (const auto& m : file.service(0).method()) methods.push_back(m.name());
  EXPECT_EQ(methods, (std::vector<std::string>{"Predict", "SaveModel", "LoadModel", "UnloadModel",
                                               "ListModels", "GetModelStatus", "UploadCheckpoint",
                                               "DownloadCheckpoint"}));
  // Every listed service can be described, under its import-path file name:
  // health and the Open Inference Protocol too (grpcurl / buf curl describe them).
  const std::map<std::string, std::string> files = {
      {"grpc.health.v1.Health", "grpc/health/v1/health.proto"},
      {"inference.GRPCInferenceService", "inference/v2/grpc_predict_v2.proto"}};
  EXPECT_THAT(names, Contains("inference.GRPCInferenceService"));
  for (const auto& [symbol, name] : files) {
    req.set_file_containing_symbol(symbol);
    ASSERT_TRUE(stream->Write(req));
    ASSERT_TRUE(stream->Read(&resp));
    ASSERT_GE(resp.file_descriptor_response().file_descriptor_proto_size(), 1)
        << symbol << ": " << resp.error_response().error_message();
    std::vector<std::string> sent;  // the file and its dependencies, in some order
    for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
      ASSERT_TRUE(file.ParseFromString(bytes));
      sent.push_back(file.name());
    }
    EXPECT_THAT(sent, Contains(name)) << symbol;
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(HealthReflectionTest, SigtermExitsCleanly) {
  auto code = server_->Stop(SIGTERM, std::chrono::seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << server_->Log();
  EXPECT_THAT(server_->Log(), HasSubstr("model-server stopped"));
}

}  // namespace
}  // namespace modelserver
