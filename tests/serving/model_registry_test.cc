#include "server/serving/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "tests/testing/fake_model.h"

namespace modelserver {
namespace {

namespace fs = std::filesystem;

// A model whose every output element is its version number; Forward can be held
// at a gate, and the model counts how many instances are alive. Thread-safe.
class VersionModel : public Model {
 public:
  VersionModel(int64_t version, absl::Notification* gate, std::atomic<int>* alive,
               absl::Notification* entered)
      : version_(version), gate_(gate), alive_(alive), entered_(entered) {
    info_.architecture = "version-model";
    info_.format = ModelFormat::kStateDict;
    info_.device = "cpu";
    ++*alive_;
  }
  ~VersionModel() override { --*alive_; }

  const ModelInfo& info() const override { return info_; }
  absl::Status ValidateInput(DType, const std::vector<int64_t>&) const override {
    return absl::OkStatus();
  }
  bool IsUnbatched(const std::vector<int64_t>&) const override { return false; }
  std::vector<int64_t> WarmupShape() const override { return {}; }
  absl::Status Save(ModelFormat, const std::string&) const override {
    return absl::UnimplementedError("test model");
  }
  absl::StatusOr<HostTensor> Forward(const HostTensor& batch) const override {
    if (entered_ != nullptr && !entered_->HasBeenNotified()) entered_->Notify();
    if (gate_ != nullptr) gate_->WaitForNotification();
    HostTensor out;
    out.dtype = DType::kFloat32;
    out.shape = {batch.shape[0], 1};
    out.data.resize(static_cast<size_t>(batch.shape[0]) * 4);
    for (int64_t i = 0; i < batch.shape[0]; ++i) {
      const float v = static_cast<float>(version_);
      std::memcpy(out.data.data() + i * 4, &v, 4);
    }
    return out;
  }

 private:
  ModelInfo info_;
  int64_t version_;
  absl::Notification* gate_;
  std::atomic<int>* alive_;
  absl::Notification* entered_;
};

// A store in a fresh temp directory, with hand-copied versions (no manifest:
// the format comes from the file name; the injected loader never reads it).
class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("registry_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    auto store = CheckpointStore::Create({root_.string(), true});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  void AddVersion(int64_t version) {
    const fs::path dir = root_ / "m" / std::to_string(version);
    fs::create_directories(dir);
    std::ofstream(dir / "model_weights.pth") << "weights " << version;
  }

  // A registry whose loader builds VersionModels from the version directory's
  // number; fails versions in `fail_`, and blocks while `load_gate_` is set.
  std::unique_ptr<ModelRegistry> MakeRegistry() {
    ModelRegistry::Options o;
    o.store = store_.get();
    o.batching.max_batch_size = 1;
    o.batching.batch_timeout = absl::ZeroDuration();
    o.batching.num_workers = 2;
    o.state_dir = state_dir_;
    o.loader = [this](const ModelLoadOptions& lo) -> absl::StatusOr<std::shared_ptr<const Model>> {
      int64_t version = 0;
      EXPECT_TRUE(absl::SimpleAtoi(fs::path(lo.path).parent_path().filename().string(), &version));
      if (load_entered_ != nullptr) load_entered_->Notify();
      if (load_gate_ != nullptr) load_gate_->WaitForNotification();
      if (version == fail_version_) return absl::DataLossError("checkpoint is corrupt");
      return std::make_shared<VersionModel>(version, version == 1 ? forward_gate_ : nullptr,
                                            &alive_, version == 1 ? &forward_entered_ : nullptr);
    };
    return std::make_unique<ModelRegistry>(o);
  }

  // Enqueues one sample; the result arrives through the future.
  std::future<absl::StatusOr<BatchTask::Result>> Predict(ModelRegistry& registry) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<BatchTask::Result>>>();
    BatchTask task;
    task.input.dtype = DType::kFloat32;
    task.input.shape = {1, 1};
    task.input.data.assign(4, '\0');
    task.done = [promise](absl::StatusOr<BatchTask::Result> r) {
      promise->set_value(std::move(r));
    };
    absl::Status s = registry.Enqueue("m", std::move(task));
    EXPECT_TRUE(s.ok()) << s;
    return promise->get_future();
  }

  static float Value(const absl::StatusOr<BatchTask::Result>& r) {
    float v = -1;
    if (r.ok() && !r->outputs.empty() && r->outputs[0].tensor.data.size() >= 4) {
      std::memcpy(&v, r->outputs[0].tensor.data.data(), 4);
    }
    return v;
  }

  fs::path root_;
  std::string state_dir_;
  std::unique_ptr<CheckpointStore> store_;
  std::atomic<int> alive_{0};
  std::atomic<int64_t> fail_version_{-1};
  absl::Notification* load_gate_ = nullptr;
  absl::Notification* load_entered_ = nullptr;
  absl::Notification* forward_gate_ = nullptr;
  absl::Notification forward_entered_;
};

TEST_F(RegistryTest, HotSwapKeepsTheOldVersionForItsInFlightBatch) {
  absl::Notification gate;
  forward_gate_ = &gate;
  AddVersion(1);
  auto registry = MakeRegistry();
  ASSERT_TRUE(registry->Load("m", "", 1).ok());
  auto in_flight = Predict(*registry);
  forward_entered_.WaitForNotification();  // v1 is inside Forward, held at the gate

  AddVersion(2);
  ASSERT_TRUE(registry->Load("m", "", 2).ok());  // the swap does not wait for the batch
  auto status = registry->Status("m");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->serving_version, 2);
  EXPECT_EQ(alive_.load(), 2);  // v1 lives on while its batch runs

  auto after = Predict(*registry);
  EXPECT_EQ(Value(after.get()), 2.0f);  // new requests go to v2 at once
  gate.Notify();
  auto r = in_flight.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(Value(r), 1.0f);  // computed by the version it was batched on
  for (int i = 0; i < 100 && alive_.load() != 1; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(alive_.load(), 1);  // v1 freed once its last batch finished
  registry->Shutdown();
}

TEST_F(RegistryTest, SecondLoadOfTheSameModelIsAborted) {
  AddVersion(1);
  absl::Notification gate, entered;
  load_gate_ = &gate;
  load_entered_ = &entered;
  auto registry = MakeRegistry();
  std::thread first([&] { EXPECT_TRUE(registry->Load("m", "", 1).ok()); });
  entered.WaitForNotification();
  absl::Status second = registry->Load("m", "", 1);
  EXPECT_EQ(second.code(), absl::StatusCode::kAborted) << second;
  EXPECT_THAT(std::string(second.message()), ::testing::HasSubstr("in progress"));
  absl::Notification async_done;
  absl::Status async_status;
  registry->LoadAsync("m", 1, [&](absl::Status s) {
    async_status = s;
    async_done.Notify();
  });
  async_done.WaitForNotification();
  EXPECT_EQ(async_status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(registry->Status("m")->state, ModelState::kLoading);
  gate.Notify();
  first.join();
  EXPECT_EQ(registry->Status("m")->state, ModelState::kReady);
}

TEST_F(RegistryTest, FailedLoadKeepsTheOldVersionServing) {
  AddVersion(1);
  AddVersion(2);
  fail_version_ = 2;
  auto registry = MakeRegistry();
  ASSERT_TRUE(registry->Load("m", "", 1).ok());
  absl::Status s = registry->Load("m", "", 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  auto status = registry->Status("m");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->state, ModelState::kReady);
  EXPECT_EQ(status->serving_version, 1);
  EXPECT_THAT(status->last_error, ::testing::HasSubstr("DATA_LOSS"));
  EXPECT_THAT(status->store_versions, ::testing::ElementsAre(1, 2));
  auto r = Predict(*registry).get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Value(r), 1.0f);
}

// Status and List report the cached listing: a version written behind the
// registry's back appears only after a refresh (StoreChanged, or the thread).
TEST_F(RegistryTest, StatusReadsTheCachedStoreListing) {
  AddVersion(1);
  ModelRegistry::Options o;
  o.store = store_.get();
  o.listing_interval = absl::ZeroDuration();  // refreshed only by StoreChanged
  ModelRegistry registry(o);
  ASSERT_TRUE(registry.Status("m").ok());
  EXPECT_THAT(registry.Status("m")->store_versions, ::testing::ElementsAre(1));
  AddVersion(2);
  EXPECT_THAT(registry.Status("m")->store_versions, ::testing::ElementsAre(1));
  EXPECT_EQ(registry.Status("other").status().code(), absl::StatusCode::kNotFound);
  registry.StoreChanged("m");
  EXPECT_THAT(registry.Status("m")->store_versions, ::testing::ElementsAre(1, 2));
  auto list = registry.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_THAT((*list)[0].store_versions, ::testing::ElementsAre(1, 2));
}

TEST_F(RegistryTest, TheListingThreadPicksUpNewVersions) {
  AddVersion(1);
  ModelRegistry::Options o;
  o.store = store_.get();
  o.listing_interval = absl::Milliseconds(20);
  ModelRegistry registry(o);
  AddVersion(2);
  std::vector<int64_t> seen;
  for (int i = 0; i < 500 && seen.size() < 2; ++i) {  // up to 10 s on a loaded machine
    absl::SleepFor(absl::Milliseconds(20));
    seen = registry.Status("m")->store_versions;
  }
  EXPECT_THAT(seen, ::testing::ElementsAre(1, 2));
}

TEST_F(RegistryTest, FailedFirstLoadIsFailedAndNotServed) {
  AddVersion(1);
  fail_version_ = 1;
  auto registry = MakeRegistry();
  EXPECT_EQ(registry->Load("m", "", 0).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(registry->Status("m")->state, ModelState::kFailed);
  EXPECT_EQ(registry->Get("m", 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RegistryTest, UnknownModelLeavesNoTrace) {
  auto registry = MakeRegistry();
  EXPECT_EQ(registry->Load("nothing", "", 0).code(), absl::StatusCode::kNotFound);
  auto list = registry->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(RegistryTest, PollingLoadsANewerVersionAndSkipsOneThatFailed) {
  AddVersion(1);
  auto registry = MakeRegistry();
  ASSERT_TRUE(registry->Load("m", "", 0).ok());
  registry->StartPolling(absl::Milliseconds(20));
  fail_version_ = 2;
  AddVersion(2);
  // Polling tries v2 once, records the failure, keeps v1.
  for (int i = 0; i < 500 && registry->Status("m")->last_error.empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(registry->Status("m")->last_error, ::testing::HasSubstr("DATA_LOSS"));
  EXPECT_EQ(registry->Status("m")->serving_version, 1);
  AddVersion(3);
  for (int i = 0; i < 500 && registry->Status("m")->serving_version != 3; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(registry->Status("m")->serving_version, 3);
  EXPECT_TRUE(registry->Status("m")->last_error.empty());
  auto r = Predict(*registry).get();
  EXPECT_EQ(Value(r), 3.0f);
  registry->Shutdown();
}

TEST_F(RegistryTest, UnloadStopsServing) {
  AddVersion(1);
  auto registry = MakeRegistry();
  ASSERT_TRUE(registry->Load("m", "", 0).ok());
  ASSERT_TRUE(registry->Unload("m").ok());
  EXPECT_EQ(registry->Get("m", 0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry->Unload("other").code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 100 && alive_.load() != 0; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(alive_.load(), 0);
}

TEST_F(RegistryTest, AVersionWhoseLoadKilledTheProcessIsSkipped) {
  AddVersion(1);
  AddVersion(2);
  state_dir_ = (root_ / ".state").string();
  {
    LoadJournal crashed(state_dir_);
    ASSERT_TRUE(crashed.Init().ok());
    crashed.BeginLoad("m", 2);  // as a process killed while loading v2 leaves it
  }
  ASSERT_TRUE(LoadJournal(state_dir_).Init().ok());  // the restart (main's StateDir)
  auto registry = MakeRegistry();
  ASSERT_TRUE(registry->Load("m", "", 0).ok());
  auto status = registry->Status("m");
  EXPECT_EQ(status->serving_version, 1);  // the newest version that did not kill it
  EXPECT_THAT(status->last_error, ::testing::HasSubstr("version 2 was being loaded"));
  registry->StartPolling(absl::Milliseconds(10));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(registry->Status("m")->serving_version, 1);  // polling passes over it too
  // An explicit load retries it; success clears the skip.
  ASSERT_TRUE(registry->Load("m", "", 2).ok());
  EXPECT_EQ(registry->Status("m")->serving_version, 2);
  EXPECT_TRUE(registry->Status("m")->last_error.empty());
  EXPECT_EQ(LoadJournal(state_dir_).SkippedVersion("m"), 0);
  registry->Shutdown();
}

// On a GPU every batch size the queue can form is warmed up on every batch
// worker's own thread (cuDNN keeps its per-shape choices per thread); the
// loading thread computes one batch-1 pass. On a CPU only that pass runs.
TEST_F(RegistryTest, GpuWarmUpRunsEveryBatchSizeOnEveryWorker) {
  AddVersion(1);
  for (const char* device : {"cuda:0", "cpu"}) {
    auto model = std::make_shared<testing::FakeModel>();
    model->set_device(device);
    ModelRegistry::Options o;
    o.store = store_.get();
    o.batching.max_batch_size = 3;
    o.batching.num_workers = 2;
    o.loader = [model](const ModelLoadOptions&) -> absl::StatusOr<std::shared_ptr<const Model>> {
      return model;
    };
    ModelRegistry registry(o);
    ASSERT_TRUE(registry.Load("m", "", 0).ok());
    const std::vector<int64_t> sizes = model->batch_sizes();
    const std::vector<std::thread::id> threads = model->threads();
    if (std::string(device) == "cpu") {
      EXPECT_THAT(sizes, ::testing::ElementsAre(1));
      continue;
    }
    ASSERT_EQ(sizes.size(), 7u);  // 1 on the loader, then 1, 2, 3 on each worker
    EXPECT_EQ(threads[0], std::this_thread::get_id());
    std::map<std::thread::id, std::vector<int64_t>> per_thread;
    for (size_t i = 1; i < sizes.size(); ++i) per_thread[threads[i]].push_back(sizes[i]);
    EXPECT_EQ(per_thread.size(), 2u);
    EXPECT_EQ(per_thread.count(std::this_thread::get_id()), 0u);
    for (const auto& [thread, seen] : per_thread) {
      EXPECT_THAT(seen, ::testing::ElementsAre(1, 2, 3));
    }
  }
}

}  // namespace
}  // namespace modelserver
