// Integration: the checkpoint store through the real server. Hot reload under
// load, refused corrupt versions, upload/download, SaveModel read back by Python,
// crash safety under SIGKILL, and store polling across two servers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "client/model_client.h"
#include "common/npy.h"
#include "server/store/checkpoint_store.h"
#include "tests/testing/server_process.h"
#include "tests/testing/test_store.h"

namespace modelserver {
namespace {

namespace fs = std::filesystem;
namespace v1 = modelserving::v1;
using testing::FixturesDir;
using ::testing::HasSubstr;

std::string Fx(const std::string& name) {
  return FixturesDir() + "/" + name + "/model_weights.pth";
}
std::string Arch(const std::string& name) {
  return testing::ReadFile(FixturesDir() + "/" + name + "/arch.txt");
}

// Every version in the store is complete and passes its manifest check, and no
// version directory is half-written.
void ExpectOnlyCompleteVersions(const std::string& root, const std::string& model) {
  auto store = CheckpointStore::Create({root, false});
  ASSERT_TRUE(store.ok());
  auto versions = (*store)->ListVersions(model);
  ASSERT_TRUE(versions.ok());
  for (int64_t v : *versions) {
    auto sv = (*store)->Resolve(model, v);
    ASSERT_TRUE(sv.ok()) << model << " v" << v << ": " << sv.status();
    EXPECT_TRUE(sv->manifest.present) << v;
    auto verified = (*store)->Verify(*sv);
    ASSERT_TRUE(verified.ok()) << model << " v" << v << ": " << verified.status();
    EXPECT_TRUE(*verified);
  }
}

class StoreReloadTest : public ::testing::Test {
 protected:
  void StartServer(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--store=" + store_, "--model=m=" + Arch("tiny"),
                                     "--batch_timeout_us=500"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = testing::ServerProcess::Start(args, store_ + "/server.log");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ModelClient::Options o;
    o.target = server_->target();
    o.timeout = std::chrono::seconds(120);
    client_ = ModelClient::Create(o);
    ASSERT_TRUE(testing::WaitForModels(*client_, {"m"}, std::chrono::seconds(60)));
  }
  void SetUp() override {
    store_ = testing::NewTempDir("reload_store");
    testing::PutVersion(store_, "m", 1, Fx("tiny"), "model_weights.pth",
                        testing::StateDictManifest(Fx("tiny"), Arch("tiny")));
    testing::PutVersion(store_, "m", 2, Fx("tiny_v2"), "model_weights.pth",
                        testing::StateDictManifest(Fx("tiny_v2"), Arch("tiny")));
  }

  v1::PredictResponse Predict() {
    v1::PredictResponse r;
    grpc::Status s =
        client_->Predict(MakePredictRequest("m", testing::FixtureNpy("tiny", "input.npy"), 0), &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }
  grpc::Status Load(int64_t version, v1::LoadModelResponse* resp = nullptr) {
    v1::LoadModelResponse r;
    return client_->LoadModel("m", version, resp != nullptr ? resp : &r);
  }

  std::string store_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<ModelClient> client_;
};

TEST_F(StoreReloadTest, HotReloadUnderLoadDropsNothing) {
  StartServer();
  const HostTensor expected[3] = {
      {}, testing::FixtureNpy("tiny", "output.npy"), testing::FixtureNpy("tiny_v2", "output.npy")};
  ASSERT_GT(testing::MaxAbsDiff(expected[1], expected[2]), 1e-2);  // versions differ
  EXPECT_EQ(Predict().version(), 2);                               // newest at startup
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, mismatches{0}, answered{0};
  std::atomic<int> seen[3] = {0, 0, 0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      auto own = ModelClient::Create(server_->target());
      const v1::PredictRequest req =
          MakePredictRequest("m", testing::FixtureNpy("tiny", "input.npy"), 0);
      while (!stop.load()) {
        v1::PredictResponse r;
        grpc::Status s = own->Predict(req, &r);
        if (!s.ok()) {
          ++failures;
          continue;
        }
        ++answered;
        const int64_t v = r.version();
        if (v != 1 && v != 2) {
          ++mismatches;
          continue;
        }
        ++seen[v];
        if (testing::MaxAbsDiff(OutputTensor(r), expected[v]) > 1e-4) ++mismatches;
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    v1::LoadModelResponse resp;
    grpc::Status s = Load(i % 2 == 0 ? 1 : 2, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.status().serving_version(), i % 2 == 0 ? 1 : 2);
    EXPECT_EQ(resp.status().state(), v1::READY);
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(seen[1].load(), 0);
  EXPECT_GT(seen[2].load(), 0);
  EXPECT_GT(answered.load(), 40);
}

TEST_F(StoreReloadTest, CorruptVersionsAreRefusedAndTheOldOneKeepsServing) {
  // 3: one flipped byte (the manifest has the original sha256), 4: truncated
  // without a manifest, 5: a checkpoint that does not fit its architecture.
  std::string bytes = testing::ReadFile(Fx("tiny_v2"));
  const std::string manifest = testing::StateDictManifest(Fx("tiny_v2"), Arch("tiny"));
  const std::string flipped = store_ + "/flipped.pth", truncated = store_ + "/truncated.pth";
  std::string f = bytes;
  f[f.size() / 2] ^= 0x01;
  std::ofstream(flipped, std::ios::binary) << f;
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  testing::PutVersion(store_, "m", 3, flipped, "model_weights.pth", manifest);
  testing::PutVersion(store_, "m", 4, truncated, "model_weights.pth", "");
  testing::PutVersion(store_, "m", 5, Fx("tiny_bn"), "model_weights.pth",
                      testing::StateDictManifest(Fx("tiny_bn"), Arch("tiny")));
  StartServer();
  // The newest (5) failed at startup; nothing serves yet... so load 1 first.
  ASSERT_TRUE(Load(1).ok());
  const HostTensor v1_out = testing::FixtureNpy("tiny", "output.npy");
  const std::pair<int64_t, grpc::StatusCode> cases[] = {
      {3, grpc::DATA_LOSS}, {4, grpc::DATA_LOSS}, {5, grpc::FAILED_PRECONDITION}};
  for (const auto& [version, code] : cases) {
    grpc::Status s = Load(version);
    EXPECT_EQ(s.error_code(), code) << version << ": " << s.error_message();
    // The reason is in the reply's status and in last_error; version 1 serves on.
    v1::ModelStatus st;
    ASSERT_TRUE(client_->GetModelStatus("m", &st).ok());
    EXPECT_EQ(st.serving_version(), 1) << version;
    EXPECT_EQ(st.state(), v1::READY);
    EXPECT_THAT(st.last_error(), HasSubstr(s.error_message()));
    // Named as the store knows it, never by a server path.
    EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr(store_)));
    EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("model 'm' version ", version)));
    v1::PredictResponse r = Predict();
    EXPECT_EQ(r.version(), 1);
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), v1_out), 1e-4);
  }
  v1::LoadModelResponse resp;
  EXPECT_THAT(Load(3, &resp).error_message(), HasSubstr("sha256"));
  EXPECT_THAT(Load(5, &resp).error_message(), HasSubstr("does not fit"));
}

TEST_F(StoreReloadTest, BadRequestsGetTheirCodes) {
  StartServer();
  v1::LoadModelResponse lr;
  EXPECT_EQ(client_->LoadModel("../x", 0, &lr).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(client_->LoadModel("", 0, &lr).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(client_->LoadModel("nope", 0, &lr).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(client_->LoadModel("m", 9, &lr).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(client_->LoadModel("m", -1, &lr).error_code(), grpc::INVALID_ARGUMENT);
  v1::UnloadModelResponse ur;
  EXPECT_EQ(client_->UnloadModel("nope", &ur).error_code(), grpc::NOT_FOUND);
  v1::DownloadHeader h;
  EXPECT_EQ(client_->Download("nope", 0, store_ + "/x", &h).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(client_->Download("m", 7, store_ + "/x", &h).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(client_->Download("a/b", 0, store_ + "/x", &h).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_FALSE(fs::exists(store_ + "/x"));
  v1::SaveModelRequest sr;
  v1::SaveModelResponse sresp;
  sr.set_model_name("nope");
  sr.set_format(v1::STATE_DICT);
  EXPECT_EQ(client_->SaveModel(sr, &sresp).error_code(), grpc::NOT_FOUND);
  sr.set_model_name("m");
  sr.set_target_model_name("bad/name");
  EXPECT_EQ(client_->SaveModel(sr, &sresp).error_code(), grpc::INVALID_ARGUMENT);
  sr.set_target_model_name("");
  sr.set_format(v1::CHECKPOINT_FORMAT_UNSPECIFIED);
  EXPECT_EQ(client_->SaveModel(sr, &sresp).error_code(), grpc::INVALID_ARGUMENT);
  sr.set_format(static_cast<v1::CheckpointFormat>(42));  // an enum value no server knows
  grpc::Status unknown = client_->SaveModel(sr, &sresp);
  EXPECT_EQ(unknown.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_THAT(unknown.error_message(), HasSubstr("format 42"));
  sr.set_format(v1::TORCHSCRIPT);  // a native VGG has no TorchScript
  EXPECT_EQ(client_->SaveModel(sr, &sresp).error_code(), grpc::UNIMPLEMENTED);
  // Nothing was written.
  auto store = CheckpointStore::Create({store_, false});
  EXPECT_EQ(*(*store)->ListVersions("m"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*(*store)->ListModels(), (std::vector<std::string>{"m"}));
}

TEST_F(StoreReloadTest, ASecondLoadOfTheSameModelWhileOneRunsIsAborted) {
  // VGG16 takes long enough to load (528 MB, sha256, warm-up) for two calls to overlap.
  testing::PutVersion(store_, "big", 1, Fx("vgg16"), "model_weights.pth",
                      testing::StateDictManifest(Fx("vgg16"), "vgg16"));
  StartServer();
  std::vector<grpc::Status> results(2);
  absl::Barrier* barrier = new absl::Barrier(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      auto c = ModelClient::Create(server_->target());
      if (barrier->Block()) delete barrier;
      v1::LoadModelResponse r;
      results[i] = c->LoadModel("big", 1, &r);
    });
  }
  for (auto& t : threads) t.join();
  const int ok = results[0].ok() + results[1].ok();
  const int aborted =
      (results[0].error_code() == grpc::ABORTED) + (results[1].error_code() == grpc::ABORTED);
  EXPECT_EQ(ok, 1) << results[0].error_message() << " / " << results[1].error_message();
  EXPECT_EQ(aborted, 1);
  for (const grpc::Status& r : results) {
    if (!r.ok()) {
      EXPECT_THAT(r.error_message(), HasSubstr("in progress"));
    }
  }
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("big", &st).ok());
  EXPECT_EQ(st.state(), v1::READY);
}

TEST_F(StoreReloadTest, UnloadThenLoadAgain) {
  StartServer();
  v1::UnloadModelResponse ur;
  ASSERT_TRUE(client_->UnloadModel("m", &ur).ok());
  EXPECT_EQ(ur.status().state(), v1::UNLOADED);
  v1::PredictResponse r;
  grpc::Status s =
      client_->Predict(MakePredictRequest("m", testing::FixtureNpy("tiny", "input.npy"), 0), &r);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("UNLOADED"));
  EXPECT_EQ(client_->UnloadModel("m", &ur).error_code(), grpc::NOT_FOUND);
  ASSERT_TRUE(Load(1).ok());
  EXPECT_EQ(Predict().version(), 1);
}

TEST_F(StoreReloadTest, UploadDownloadAndSaveRoundTripThroughPython) {
  StartServer();
  // Python's file goes in through the CLI, as a user would upload it.
  std::string out;
  ASSERT_EQ(
      testing::RunCommand(absl::StrCat(testing::ClientBinary(), " --target=", server_->target(),
                                       " upload up --file=", Fx("vgg16"), " --architecture=vgg16"),
                          &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("uploaded up version 1"));
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("up", 0, &lr).ok());
  EXPECT_EQ(lr.status().architecture(), "vgg16");
  v1::PredictResponse served;
  ASSERT_TRUE(
      client_
          ->Predict(MakePredictRequest("up", testing::FixtureNpy("vgg16", "input.npy"), 0), &served)
          .ok());
  EXPECT_LE(testing::MaxAbsDiff(OutputTensor(served), testing::FixtureNpy("vgg16", "output.npy")),
            1e-4);
  // Download gives back the exact bytes.
  v1::DownloadHeader header;
  ASSERT_TRUE(client_->Download("up", 1, store_ + "/down.pth", &header).ok());
  EXPECT_EQ(header.size_bytes(), static_cast<int64_t>(fs::file_size(Fx("vgg16"))));
  EXPECT_EQ(header.architecture(), "vgg16");
  EXPECT_TRUE(testing::ReadFile(store_ + "/down.pth") == testing::ReadFile(Fx("vgg16")));
  // SaveModel writes a new version that Python loads into torchvision's VGG16.
  v1::SaveModelRequest sr;
  sr.set_model_name("up");
  sr.set_format(v1::STATE_DICT);
  sr.set_target_model_name("saved");
  v1::SaveModelResponse sresp;
  grpc::Status s = client_->SaveModel(sr, &sresp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(sresp.model_name(), "saved");
  EXPECT_EQ(sresp.version(), 1);
  const std::string saved = store_ + "/saved/1/model_weights.pth";
  EXPECT_EQ(sresp.size_bytes(), static_cast<int64_t>(fs::file_size(saved)));
  ExpectOnlyCompleteVersions(store_, "saved");
  const std::string py_out = store_ + "/py_out.npy";
  ASSERT_EQ(testing::RunCommand(absl::StrCat("/usr/bin/python3 ", testing::SourceDir(),
                                             "/tests/testing/run_saved_state_dict.py ", saved,
                                             " vgg16 ", FixturesDir(), "/vgg16/input.npy ", py_out),
                                &out),
            0)
      << out;
  auto py = ReadNpy(py_out);
  ASSERT_TRUE(py.ok());
  EXPECT_LE(testing::MaxAbsDiff(*py, OutputTensor(served)), 1e-4);
}

TEST_F(StoreReloadTest, BadUploadsWriteNothing) {
  StartServer({"--max_upload_bytes=100000"});
  v1::UploadHeader h;
  h.set_model_name("u");
  h.set_format(v1::STATE_DICT);
  v1::UploadCheckpointResponse resp;
  // Wrong sha256.
  h.set_sha256(std::string(64, 'a'));
  grpc::Status s = client_->Upload(Fx("tiny"), h, &resp);
  EXPECT_EQ(s.error_code(), grpc::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("sha256"));
  // Not a sha256 at all: 64 characters, not hex digits.
  for (const std::string& bad :
       {std::string(64, 'z'), std::string(63, 'a'), std::string(64, 'A')}) {
    h.set_sha256(bad);
    s = client_->Upload(Fx("tiny"), h, &resp);
    EXPECT_EQ(s.error_code(), grpc::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("64 lower-case hex digits"));
  }
  h.clear_sha256();
  // Over the limit: the announced size, and the streamed bytes.
  s = client_->Upload(Fx("vgg11_bn"), h, &resp);
  EXPECT_EQ(s.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("100000"));
  // Not a checkpoint.
  const std::string junk = store_ + "/junk.pth";
  std::ofstream(junk) << std::string(5000, 'j');
  s = client_->Upload(junk, h, &resp);
  EXPECT_EQ(s.error_code(), grpc::DATA_LOSS) << s.error_message();
  // Bad names and formats.
  h.set_model_name("../evil");
  EXPECT_EQ(client_->Upload(Fx("tiny"), h, &resp).error_code(), grpc::INVALID_ARGUMENT);
  h.set_model_name("u");
  h.set_format(v1::CHECKPOINT_FORMAT_UNSPECIFIED);
  EXPECT_EQ(client_->Upload(Fx("tiny"), h, &resp).error_code(), grpc::INVALID_ARGUMENT);
  h.set_format(v1::STATE_DICT);
  h.set_architecture("resnet");
  EXPECT_EQ(client_->Upload(Fx("tiny"), h, &resp).error_code(), grpc::INVALID_ARGUMENT);
  // A stream without a header.
  {
    grpc::ClientContext ctx;
    auto w = client_->stub()->UploadCheckpoint(&ctx, &resp);
    v1::UploadCheckpointRequest chunk;
    chunk.set_chunk("abc");
    w->Write(chunk);
    w->WritesDone();
    EXPECT_EQ(w->Finish().error_code(), grpc::INVALID_ARGUMENT);
  }
  // Nothing in the store: no model "u", no staging directory left behind.
  EXPECT_FALSE(fs::exists(store_ + "/evil"));
  if (fs::exists(store_ + "/u")) {
    EXPECT_TRUE(fs::is_empty(store_ + "/u"));
  }
  // A good upload still works.
  h.set_architecture(Arch("tiny"));
  ASSERT_TRUE(client_->Upload(Fx("tiny"), h, &resp).ok());
  EXPECT_EQ(resp.version(), 1);
}

// Every file of the store (but the server logs) with its bytes.
std::map<std::string, std::string> StoreContents(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    const std::string rel = fs::relative(e.path(), root).string();
    if (rel.rfind("server", 0) == 0 && rel.find(".log") != std::string::npos) continue;
    out[rel] = e.is_regular_file() ? testing::ReadFile(e.path().string()) : "<dir>";
  }
  return out;
}

// Uploads that could never load are refused before anything is published: the
// store is byte-for-byte unchanged and no version number is used.
TEST_F(StoreReloadTest, NeverLoadableUploadsAreRefusedAndTheStoreIsUnchanged) {
  StartServer();
  const auto before = StoreContents(store_);
  struct Case {
    const char* what;
    std::string file;
    v1::CheckpointFormat format;
    std::string architecture;
    grpc::StatusCode code;
    const char* says;
  };
  const std::string dir = FixturesDir();
  const Case cases[] = {
      {"state dict without an architecture", Fx("tiny"), v1::STATE_DICT, "",
       grpc::FAILED_PRECONDITION, "needs an architecture"},
      {"state dict that does not fit its architecture", Fx("tiny"), v1::STATE_DICT, "vgg16",
       grpc::FAILED_PRECONDITION, "missing keys"},
      {"torch.save(model) of a user class", dir + "/pickled_userclass/model.pth",
       v1::PICKLED_MODULE, "", grpc::FAILED_PRECONDITION, "MyNet"},
      {"TorchScript uploaded as STATE_DICT", dir + "/tiny_ts_script/model.pt", v1::STATE_DICT,
       Arch("tiny"), grpc::INVALID_ARGUMENT, "format TORCHSCRIPT"},
      {"state dict uploaded as TORCHSCRIPT", Fx("tiny"), v1::TORCHSCRIPT, "",
       grpc::INVALID_ARGUMENT, "not a TorchScript archive"},
      {"state dict uploaded as PICKLED_MODULE", Fx("tiny"), v1::PICKLED_MODULE, "",
       grpc::FAILED_PRECONDITION, "format STATE_DICT"},
  };
  for (const Case& c : cases) {
    v1::UploadHeader h;
    h.set_model_name("u");
    h.set_format(c.format);
    h.set_architecture(c.architecture);
    v1::UploadCheckpointResponse resp;
    grpc::Status s = client_->Upload(c.file, h, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.says)) << c.what;
    EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr(store_))) << c.what;
    EXPECT_EQ(StoreContents(store_), before) << c.what;
  }
  v1::UploadHeader h;
  h.set_model_name("u");
  h.set_format(v1::STATE_DICT);
  h.set_architecture(Arch("tiny"));
  v1::UploadCheckpointResponse resp;
  ASSERT_TRUE(client_->Upload(Fx("tiny"), h, &resp).ok());
  EXPECT_EQ(resp.version(), 1);  // no number was used by the refused ones
}

TEST_F(StoreReloadTest, SigkillMidUploadAndMidSaveLeavesOnlyCompleteVersions) {
  testing::PutVersion(store_, "big", 1, Fx("vgg16"), "model_weights.pth",
                      testing::StateDictManifest(Fx("vgg16"), "vgg16"));
  StartServer({"--model=big"});
  ASSERT_TRUE(testing::WaitForModels(*client_, {"big"}, std::chrono::seconds(120)));
  // Upload: half a file, then the server dies.
  {
    grpc::ClientContext ctx;
    v1::UploadCheckpointResponse resp;
    auto w = client_->stub()->UploadCheckpoint(&ctx, &resp);
    v1::UploadCheckpointRequest m;
    m.mutable_header()->set_model_name("m");
    m.mutable_header()->set_format(v1::STATE_DICT);
    ASSERT_TRUE(w->Write(m));
    const std::string bytes = testing::ReadFile(Fx("tiny_v2"));
    m.set_chunk(bytes.substr(0, bytes.size() / 2));
    ASSERT_TRUE(w->Write(m));
    // Wait until the server has the partial file on disk, then SIGKILL it.
    bool staged = false;
    for (int i = 0; i < 1000 && !staged; ++i) {
      for (const auto& e : fs::directory_iterator(store_ + "/m")) {
        staged |= e.path().filename().string().rfind(".staging-", 0) == 0 &&
                  fs::exists(e.path() / "model_weights.pth") &&
                  fs::file_size(e.path() / "model_weights.pth") > 0;
      }
      if (!staged) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(staged);
    ASSERT_TRUE(server_->Stop(SIGKILL, std::chrono::seconds(10)).ok());
    ctx.TryCancel();
    (void)w->Finish();
  }
  StartServer({"--model=big"});
  ExpectOnlyCompleteVersions(store_, "m");
  auto store = CheckpointStore::Create({store_, false});
  EXPECT_EQ(*(*store)->ListVersions("m"), (std::vector<int64_t>{1, 2}));
  // Save: SIGKILL while the 528 MB file is being written.
  ASSERT_TRUE(testing::WaitForModels(*client_, {"big"}, std::chrono::seconds(120)));
  std::thread saver([&] {
    v1::SaveModelRequest sr;
    sr.set_model_name("big");
    sr.set_format(v1::STATE_DICT);
    v1::SaveModelResponse sresp;
    (void)client_->SaveModel(sr, &sresp);  // fails: the server dies
  });
  bool writing = false;
  for (int i = 0; i < 3000 && !writing; ++i) {
    if (fs::exists(store_ + "/big")) {
      for (const auto& e : fs::directory_iterator(store_ + "/big")) {
        writing |= e.path().filename().string().rfind(".staging-", 0) == 0 &&
                   fs::exists(e.path() / "model_weights.pth");
      }
    }
    if (!writing) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(writing);
  ASSERT_TRUE(server_->Stop(SIGKILL, std::chrono::seconds(10)).ok());
  saver.join();
  StartServer({"--model=big"});
  ExpectOnlyCompleteVersions(store_, "big");
  auto after = CheckpointStore::Create({store_, false});
  const auto versions = *(*after)->ListVersions("big");
  // Version 2 exists only if the save had completed before the kill; either way it verifies.
  EXPECT_LE(versions.size(), 2u);
}

TEST_F(StoreReloadTest, PollingServersConvergeOnANewVersion) {
  // Only version 1 at first.
  fs::remove_all(store_ + "/m/2");
  StartServer({"--poll_store_seconds=1"});
  auto second = testing::ServerProcess::Start(
      {"--store=" + store_, "--model=m=" + Arch("tiny"), "--poll_store_seconds=1"},
      store_ + "/server2.log");
  ASSERT_TRUE(second.ok()) << second.status();
  auto client2 = ModelClient::Create((*second)->target());
  ASSERT_TRUE(testing::WaitForModels(*client2, {"m"}, std::chrono::seconds(60)));
  v1::UploadHeader h;
  h.set_model_name("m");
  h.set_format(v1::STATE_DICT);
  v1::UploadCheckpointResponse resp;
  ASSERT_TRUE(client_->Upload(Fx("tiny_v2"), h, &resp).ok());
  EXPECT_EQ(resp.version(), 2);
  const HostTensor expected = testing::FixtureNpy("tiny_v2", "output.npy");
  for (ModelClient* c : {client_.get(), client2.get()}) {
    int64_t version = 0;
    for (int i = 0; i < 300 && version != 2; ++i) {
      v1::ModelStatus st;
      if (c->GetModelStatus("m", &st).ok()) version = st.serving_version();
      if (version != 2) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(version, 2);
    v1::PredictResponse r;
    ASSERT_TRUE(
        c->Predict(MakePredictRequest("m", testing::FixtureNpy("tiny", "input.npy"), 0), &r).ok());
    EXPECT_EQ(r.version(), 2);
    EXPECT_LE(testing::MaxAbsDiff(OutputTensor(r), expected), 1e-4);
  }
}

// Waits (bounded) until `c` serves `version` of m; returns what it serves then.
int64_t WaitForServing(ModelClient* c, int64_t version, v1::ModelStatus* st) {
  int64_t serving = 0;
  for (int i = 0; i < 200 && serving != version; ++i) {
    if (c->GetModelStatus("m", st).ok()) serving = st->serving_version();
    if (serving != version) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return serving;
}

// A rollback stays rolled back: LoadModel of v1 on one replica pins the model in
// the store; both polling replicas serve v1 (not the newer v2), so does a
// restarted one; LoadModel of version 0 unpins and both return to v2.
TEST_F(StoreReloadTest, PinnedVersionHoldsForEveryReplicaUntilUnpinned) {
  StartServer({"--poll_store_seconds=1"});
  std::vector<std::string> args = {"--store=" + store_, "--model=m=" + Arch("tiny"),
                                   "--poll_store_seconds=1"};
  auto second = testing::ServerProcess::Start(args, store_ + "/server2.log");
  ASSERT_TRUE(second.ok()) << second.status();
  auto client2 = ModelClient::Create((*second)->target());
  ASSERT_TRUE(testing::WaitForModels(*client2, {"m"}, std::chrono::seconds(60)));
  v1::ModelStatus st;
  ASSERT_EQ(WaitForServing(client2.get(), 2, &st), 2);
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("m", 1, &lr).ok());
  EXPECT_EQ(lr.status().pinned_version(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // three poll intervals
  for (ModelClient* c : {client_.get(), client2.get()}) {
    EXPECT_EQ(WaitForServing(c, 1, &st), 1);
    EXPECT_EQ(st.pinned_version(), 1);
    EXPECT_EQ(st.serving_version(), 1);  // polling did not undo the rollback
  }
  // A restarted replica honours the pin from the store.
  second->reset();
  auto third = testing::ServerProcess::Start(args, store_ + "/server3.log");
  ASSERT_TRUE(third.ok()) << third.status();
  auto client3 = ModelClient::Create((*third)->target());
  ASSERT_TRUE(testing::WaitForModels(*client3, {"m"}, std::chrono::seconds(60)));
  ASSERT_TRUE(client3->GetModelStatus("m", &st).ok());
  EXPECT_EQ(st.serving_version(), 1);
  EXPECT_EQ(st.pinned_version(), 1);
  // Unpin: both return to the newest.
  ASSERT_TRUE(client_->LoadModel("m", 0, &lr).ok());
  EXPECT_EQ(lr.status().pinned_version(), 0);
  EXPECT_EQ(lr.status().serving_version(), 2);
  EXPECT_EQ(WaitForServing(client3.get(), 2, &st), 2);
  EXPECT_EQ(st.pinned_version(), 0);
}

// A server killed while loading v2 left <store>/.state/m.loading behind: the
// restarted server serves v1 and says why, instead of dying on v2 again.
TEST_F(StoreReloadTest, RestartSkipsTheVersionWhoseLoadKilledTheServer) {
  std::filesystem::create_directories(store_ + "/.state");
  std::ofstream(store_ + "/.state/m.loading") << "2\n";
  StartServer();
  v1::ModelStatus st;
  ASSERT_TRUE(client_->GetModelStatus("m", &st).ok());
  EXPECT_EQ(st.state(), v1::READY);
  EXPECT_EQ(st.serving_version(), 1);
  EXPECT_THAT(st.last_error(), HasSubstr("version 2 was being loaded"));
  v1::ListModelsResponse list;
  ASSERT_TRUE(client_->ListModels(&list).ok());
  ASSERT_EQ(list.models_size(), 1);  // the state directory is not a model
  // LoadModel of v2 retries it; it loads, and the skip is gone.
  v1::LoadModelResponse lr;
  ASSERT_TRUE(client_->LoadModel("m", 2, &lr).ok());
  EXPECT_EQ(lr.status().serving_version(), 2);
  EXPECT_FALSE(std::filesystem::exists(store_ + "/.state/m.skip"));
}

}  // namespace
}  // namespace modelserver
