#include "server/store/checkpoint_store.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/sha256.h"

namespace modelserver {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Per process: the suite also runs at once under the rename shim.
    root_ = ::testing::TempDir() + "/store_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    auto s = CheckpointStore::Create({root_, true});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  std::string Put(const std::string& model, const std::string& version, const std::string& file,
                  const std::string& content) {
    const fs::path dir = fs::path(root_) / model / version;
    fs::create_directories(dir);
    std::ofstream(dir / file) << content;
    return (dir / file).string();
  }
  void Manifest(const std::string& model, const std::string& version, const std::string& json) {
    std::ofstream(fs::path(root_) / model / version / "manifest.json") << json;
  }

  static std::string ReadAll(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string root_;
  std::unique_ptr<CheckpointStore> store_;
};

TEST_F(CheckpointStoreTest, ModelNames) {
  for (const char* ok : {"vgg16", "a", "A.b_c-9", "0model"}) {
    EXPECT_TRUE(CheckpointStore::ValidateModelName(ok).ok()) << ok;
  }
  for (const std::string& bad : {std::string(""), std::string("../x"), std::string("a/b"),
                                 std::string(".hidden"), std::string("-x"), std::string(129, 'a'),
                                 std::string("sp ace"), std::string("nul\0x", 5)}) {
    absl::Status s = CheckpointStore::ValidateModelName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("[A-Za-z0-9._-]"));
  }
}

TEST_F(CheckpointStoreTest, VersionsAndNewest) {
  Put("m", "1", "model_weights.pth", "one");
  Put("m", "10", "model_weights.pth", "ten");
  Put("m", "2", "model_weights.pth", "two");
  fs::create_directories(fs::path(root_) / "m" / ".staging-abc");
  fs::create_directories(fs::path(root_) / "m" / "007");
  fs::create_directories(fs::path(root_) / "m" / "x1");
  auto versions = store_->ListVersions("m");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(*versions, (std::vector<int64_t>{1, 2, 10}));
  auto newest = store_->Resolve("m", 0);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_EQ(newest->version, 10);
  EXPECT_EQ(newest->manifest.format, ModelFormat::kStateDict);
  EXPECT_FALSE(newest->manifest.present);
  EXPECT_EQ(store_->Resolve("m", 3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Resolve("other", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Resolve("../etc", 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto models = store_->ListModels();
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(*models, (std::vector<std::string>{"m"}));
}

TEST_F(CheckpointStoreTest, FormatFromFileName) {
  Put("ts", "1", "model.pt", "x");
  Put("pk", "1", "model.pth", "x");
  EXPECT_EQ(store_->Resolve("ts", 0)->manifest.format, ModelFormat::kTorchScript);
  EXPECT_EQ(store_->Resolve("pk", 0)->manifest.format, ModelFormat::kPickledModule);
  Put("two", "1", "model.pt", "x");
  Put("two", "1", "model.pth", "x");
  EXPECT_EQ(store_->Resolve("two", 0).status().code(), absl::StatusCode::kFailedPrecondition);
  fs::create_directories(fs::path(root_) / "none" / "1");
  EXPECT_EQ(store_->Resolve("none", 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CheckpointStoreTest, ManifestAndVerify) {
  const std::string path = Put("m", "1", "model_weights.pth", "weights");
  const std::string sha = *Sha256File(path);
  Manifest("m", "1",
           R"({"format": "STATE_DICT", "architecture": "vgg16", "file": "model_weights.pth",
      "sha256": ")" +
               sha + R"(", "size_bytes": 7, "created_at": "2026-01-01T00:00:00Z", "source": "t"})");
  auto v = store_->Resolve("m", 1);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->manifest.present);
  EXPECT_EQ(v->manifest.architecture, "vgg16");
  EXPECT_EQ(v->manifest.size_bytes, 7);
  auto verified = store_->Verify(*v);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(*verified);
  // A flipped byte (same size) fails the sha256.
  std::ofstream(path) << "weighTs";
  auto bad = store_->Verify(*v);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("sha256"));
  // A truncated file fails the size.
  std::ofstream(path) << "w";
  EXPECT_THAT(std::string(store_->Verify(*v).status().message()), HasSubstr("truncated"));
}

TEST_F(CheckpointStoreTest, BadManifests) {
  Put("m", "1", "model_weights.pth", "w");
  for (const char* json : {"{", "[]", R"({"format": "ONNX"})",
                           R"({"format": "STATE_DICT", "file": "../../etc/passwd"})"}) {
    Manifest("m", "1", json);
    EXPECT_EQ(store_->Resolve("m", 1).status().code(), absl::StatusCode::kDataLoss) << json;
  }
}

TEST_F(CheckpointStoreTest, SymlinkOutOfTheStoreIsRefused) {
  const std::string outside =
      ::testing::TempDir() + "/outside_weights_" + std::to_string(getpid()) + ".pth";
  std::ofstream(outside) << "secret";
  fs::create_directories(fs::path(root_) / "m" / "1");
  fs::create_symlink(outside, fs::path(root_) / "m" / "1" / "model_weights.pth");
  auto v = store_->Resolve("m", 1);
  EXPECT_EQ(v.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("outside the store"));
}

}  // namespace
}  // namespace modelserver

namespace modelserver {
namespace {

class PublishTest : public CheckpointStoreTest {
 protected:
  CheckpointStore::NewVersion NV(const std::string& name = "m") {
    CheckpointStore::NewVersion v;
    v.model_name = name;
    v.format = ModelFormat::kTorchScript;  // structural check: any readable zip
    v.architecture = "";
    v.source = "test";
    return v;
  }
  // A minimal archive that passes the TorchScript format check: one stored
  // record named m/code/x.py (the store sniffs names; it does not run code).
  static std::string EmptyZip() {
    auto put = [](std::string* z, uint32_t v, int n) {
      for (int i = 0; i < n; ++i) z->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    const std::string name = "m/code/x.py";
    std::string z;
    put(&z, 0x04034b50, 4);
    for (int v : {20, 0, 0, 0, 0}) put(&z, v, 2);
    for (uint32_t v : {0u, 0u, 0u}) put(&z, v, 4);  // crc, sizes: an empty record
    put(&z, name.size(), 2);
    put(&z, 0, 2);
    z += name;
    const uint32_t cd_offset = z.size();
    put(&z, 0x02014b50, 4);
    for (int v : {20, 20, 0, 0, 0, 0}) put(&z, v, 2);
    for (uint32_t v : {0u, 0u, 0u}) put(&z, v, 4);
    put(&z, name.size(), 2);
    for (int v : {0, 0, 0, 0}) put(&z, v, 2);
    put(&z, 0, 4);  // external attributes
    put(&z, 0, 4);  // local header offset
    z += name;
    const uint32_t cd_size = z.size() - cd_offset;
    put(&z, 0x06054b50, 4);
    for (int v : {0, 0, 1, 1}) put(&z, v, 2);
    put(&z, cd_size, 4);
    put(&z, cd_offset, 4);
    put(&z, 0, 2);
    return z;
  }
  std::vector<std::string> Staging(const std::string& model) {
    std::vector<std::string> out;
    if (!fs::exists(fs::path(root_) / model)) return out;
    for (const auto& e : fs::directory_iterator(fs::path(root_) / model)) {
      if (e.path().filename().string().rfind(".staging-", 0) == 0) out.push_back(e.path());
    }
    return out;
  }
};

TEST_F(PublishTest, CommitPublishesTheNextVersionWithAManifest) {
  Put("m", "4", "model.pt", "old");
  CheckpointStore::NewVersion nv = NV();
  nv.quantized_engine = "qnnpack";
  auto p = store_->BeginVersion(nv);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE((*p)->Append(EmptyZip().substr(0, 10)).ok());
  ASSERT_TRUE((*p)->Append(EmptyZip().substr(10)).ok());
  EXPECT_EQ(*store_->ListVersions("m"), (std::vector<int64_t>{4}));  // invisible until commit
  auto v = (*p)->Commit();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->version, 5);
  EXPECT_EQ(*store_->ListVersions("m"), (std::vector<int64_t>{4, 5}));
  auto r = store_->Resolve("m", 5);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->manifest.present);
  EXPECT_EQ(r->manifest.format, ModelFormat::kTorchScript);
  EXPECT_EQ(r->manifest.size_bytes, static_cast<int64_t>(EmptyZip().size()));
  EXPECT_EQ(r->manifest.sha256, *Sha256File(r->path));
  EXPECT_EQ(r->manifest.source, "test");
  EXPECT_EQ(r->manifest.quantized_engine, "qnnpack");  // written and read back
  EXPECT_TRUE(*store_->Verify(*r));
  p->reset();
  EXPECT_TRUE(Staging("m").empty());
}

// An architecture template goes only with a state dict; an announced template
// that never arrives, or differs, is refused. Nothing is published either way.
TEST_F(PublishTest, ArchitectureFilesAreCheckedBeforePublishing) {
  auto p = store_->BeginVersion(NV());  // TORCHSCRIPT
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->AppendArchitecture(EmptyZip()).ok());
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  absl::Status s = (*p)->Commit().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("goes with a STATE_DICT"));
  CheckpointStore::NewVersion nv = NV();
  nv.expected_architecture_sha256 = std::string(64, '0');
  p = store_->BeginVersion(nv);
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  EXPECT_THAT(std::string((*p)->Commit().status().message()),
              HasSubstr("announced an architecture file"));
  p->reset();
  EXPECT_TRUE(store_->ListVersions("m")->empty());
  EXPECT_TRUE(Staging("m").empty());
}

TEST_F(PublishTest, AbandonedOrFailedVersionsLeaveNothing) {
  {
    auto p = store_->BeginVersion(NV());
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->Append("partial").ok());
    EXPECT_EQ(Staging("m").size(), 1u);
  }  // client went away
  EXPECT_TRUE(Staging("m").empty());
  EXPECT_TRUE(store_->ListVersions("m")->empty());
  // Announced sha256 / size that do not match.
  CheckpointStore::NewVersion nv = NV();
  nv.expected_sha256 = std::string(64, '0');
  auto p = store_->BeginVersion(nv);
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  EXPECT_EQ((*p)->Commit().status().code(), absl::StatusCode::kDataLoss);
  nv = NV();
  nv.expected_size = 1000;  // more than is sent
  p = store_->BeginVersion(nv);
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  EXPECT_THAT(std::string((*p)->Commit().status().message()), HasSubstr("announced 1000"));
  // Over the limit.
  nv = NV();
  nv.max_bytes = 10;
  p = store_->BeginVersion(nv);
  EXPECT_EQ((*p)->Append(EmptyZip()).code(), absl::StatusCode::kResourceExhausted);
  // Not a checkpoint at all.
  p = store_->BeginVersion(NV());
  ASSERT_TRUE((*p)->Append(std::string(100, 'x')).ok());
  EXPECT_EQ((*p)->Commit().status().code(), absl::StatusCode::kDataLoss);
  p->reset();
  EXPECT_TRUE(Staging("m").empty());
  EXPECT_TRUE(store_->ListVersions("m")->empty());
  EXPECT_EQ(store_->BeginVersion(NV("../x")).status().code(), absl::StatusCode::kInvalidArgument);
  nv = NV();
  nv.format = ModelFormat::kUnspecified;
  EXPECT_EQ(store_->BeginVersion(nv).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PublishTest, ConcurrentPublishersGetDistinctVersions) {
  constexpr int kThreads = 8;
  std::vector<int64_t> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto p = store_->BeginVersion(NV());
      ASSERT_TRUE(p.ok());
      ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
      auto v = (*p)->Commit();
      ASSERT_TRUE(v.ok()) << v.status();
      got[t] = v->version;
    });
  }
  for (auto& t : threads) t.join();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  // A version published by another process meanwhile is never overwritten.
  Put("m", "9", "model.pt", "other");
  auto p = store_->BeginVersion(NV());
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  EXPECT_EQ((*p)->Commit()->version, 10);
  EXPECT_EQ(ReadAll(fs::path(root_) / "m" / "9" / "model.pt"), "other");
}

TEST_F(PublishTest, StaleStagingIsRemovedButNeverALiveUpload) {
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  // A live upload: its directory is old (the file inside is what changes), and
  // even with every mtime old its writer's lock keeps it.
  auto p = store_->BeginVersion(NV());
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->Append("some bytes").ok());
  const std::string dir = Staging("m").at(0);
  fs::last_write_time(dir, old);
  EXPECT_EQ(store_->RemoveStaleStaging(absl::Hours(1)), 0);  // the file is fresh
  for (const auto& e : fs::directory_iterator(dir)) fs::last_write_time(e.path(), old);
  EXPECT_EQ(store_->RemoveStaleStaging(absl::Hours(1)), 0);  // locked by its writer
  EXPECT_TRUE(fs::exists(dir));
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  // A writer that died: no lock; removed once nothing in it changed for an hour.
  const fs::path dead = fs::path(root_) / "m" / ".staging-dead01";
  fs::create_directories(dead);
  std::ofstream(dead / "model.pt") << "partial";
  EXPECT_EQ(store_->RemoveStaleStaging(absl::Hours(1)), 0);  // fresh
  fs::last_write_time(dead / "model.pt", old);
  fs::last_write_time(dead, old);
  EXPECT_EQ(store_->RemoveStaleStaging(absl::Hours(1)), 1);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(dir));
}

TEST_F(PublishTest, ClaimsOfWritersThatDiedArePassedOverAndCleanedUp) {
  fs::create_directories(fs::path(root_) / "m");
  std::ofstream(fs::path(root_) / "m" / ".claim-1");  // a writer died after claiming 1
  auto p = store_->BeginVersion(NV());
  ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
  auto v = (*p)->Commit();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->version, 2);
  EXPECT_EQ(*store_->ListVersions("m"), (std::vector<int64_t>{2}));  // a claim is no version
  EXPECT_FALSE(fs::exists(fs::path(root_) / "m" / ".claim-2"));      // own claim removed
  fs::last_write_time(fs::path(root_) / "m" / ".claim-1",
                      fs::file_time_type::clock::now() - std::chrono::hours(2));
  EXPECT_EQ(store_->RemoveStaleStaging(absl::Hours(1)), 1);
  EXPECT_FALSE(fs::exists(fs::path(root_) / "m" / ".claim-1"));
}

TEST_F(PublishTest, TwoStoresOnOneDirectoryNeverShareAVersion) {
  // Two CheckpointStore objects stand for two processes: no shared mutex, only
  // the claim files order them.
  auto other = CheckpointStore::Create({root_, false});
  ASSERT_TRUE(other.ok());
  constexpr int kEach = 6;
  std::vector<int64_t> got;
  absl::Mutex mu;
  auto publish = [&](const CheckpointStore* store) {
    for (int i = 0; i < kEach; ++i) {
      auto p = store->BeginVersion(NV());
      ASSERT_TRUE(p.ok());
      ASSERT_TRUE((*p)->Append(EmptyZip()).ok());
      auto v = (*p)->Commit();
      ASSERT_TRUE(v.ok()) << v.status();
      absl::MutexLock lock(&mu);
      got.push_back(v->version);
    }
  };
  std::thread a(publish, store_.get()), b(publish, other->get());
  a.join();
  b.join();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(std::adjacent_find(got.begin(), got.end()), got.end());  // all distinct
  EXPECT_EQ(store_->ListVersions("m")->size(), 2u * kEach);
}

// Under tests/testing/rename_noflags.c (LD_PRELOAD, the store_test_nfs_rename
// run), rename flags fail as on NFS -- so the tests above passing there shows
// the store does not depend on them.
TEST(RenameFlagsShim, RefusesFlagsWhenLoaded) {
  const char* preload = std::getenv("LD_PRELOAD");
  if (preload == nullptr || std::string(preload).find("rename_noflags") == std::string::npos) {
    std::printf("note: the rename_noflags shim is not loaded in this run; not checked\n");
    return;
  }
  const std::string a = ::testing::TempDir() + "/shim_a" + std::to_string(getpid()),
                    b = ::testing::TempDir() + "/shim_b" + std::to_string(getpid());
  std::ofstream(a) << "x";
  std::remove(b.c_str());
  EXPECT_EQ(renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_NOREPLACE), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(CheckpointStoreTest, MessagesDescribeStorePathsWithoutShowingThem) {
  const std::string r = store_->root();  // canonical, as in the store's own messages
  EXPECT_EQ(store_->Describe(r + "/vgg16/3/model_weights.pth: zip record 'a' is corrupt"),
            "model 'vgg16' version 3 file 'model_weights.pth': zip record 'a' is corrupt");
  EXPECT_EQ(store_->Describe("cannot create " + r + "/m/.staging-Ab12Cd/model.pt: No space"),
            "cannot create an upload of model 'm' (file 'model.pt'): No space");
  EXPECT_EQ(store_->Describe("cannot list " + r + ": gone"), "cannot list the store: gone");
  EXPECT_EQ(store_->Describe("nothing here"), "nothing here");
  auto missing = store_->Resolve("nope", 0);
  EXPECT_EQ(store_->Describe(missing.status().message()).find(r), std::string::npos);
}

TEST_F(CheckpointStoreTest, PinIsKeptInTheStore) {
  Put("m", "1", "model.pt", "a");
  Put("m", "2", "model.pt", "b");
  EXPECT_EQ(*store_->Pin("m"), 0);
  ASSERT_TRUE(store_->SetPin("m", 1).ok());
  EXPECT_EQ(*store_->Pin("m"), 1);
  auto other = CheckpointStore::Create({root_, false});  // another replica
  EXPECT_EQ(*(*other)->Pin("m"), 1);
  EXPECT_EQ(*store_->ListVersions("m"), (std::vector<int64_t>{1, 2}));  // not a version
  ASSERT_TRUE(store_->SetPin("m", 0).ok());
  EXPECT_EQ(*store_->Pin("m"), 0);
  ASSERT_TRUE(store_->SetPin("m", 0).ok());  // unpinning twice is fine
  std::ofstream(fs::path(root_) / "m" / ".pin") << "garbage";
  EXPECT_EQ(store_->Pin("m").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Pin("../m").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modelserver
