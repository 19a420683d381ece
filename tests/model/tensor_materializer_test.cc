#include "server/model/tensor_materializer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

using testing::FixturesDir;
using ::testing::HasSubstr;
using testing::ReadFile;

std::string Fixture(const std::string& rel) { return FixturesDir() + "/" + rel; }

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(CheckpointReaderTest, ReadsEveryStorageDtypeAndView) {
  auto sd = ReadStateDict(Fixture("reader/dtypes.pth"), {});
  ASSERT_TRUE(sd.ok()) << sd.status();
  std::map<std::string, at::Tensor> t(sd->begin(), sd->end());
  const at::Tensor base = at::arange(24);
  EXPECT_TRUE(t["f32"].equal(base.to(at::kFloat).reshape({2, 3, 4})));
  EXPECT_TRUE(t["f64"].equal(base.to(at::kDouble).reshape({4, 6})));
  EXPECT_TRUE(t["f16"].equal(base.to(at::kHalf)));
  EXPECT_TRUE(t["bf16"].equal(base.to(at::kBFloat16)));
  EXPECT_TRUE(t["i64"].equal(base - 12));
  EXPECT_TRUE(t["i32"].equal((base - 12).to(at::kInt)));
  EXPECT_TRUE(t["i16"].equal((base - 12).to(at::kShort)));
  EXPECT_TRUE(t["i8"].equal((base - 12).to(at::kChar)));
  EXPECT_TRUE(t["u8"].equal(base.to(at::kByte)));
  EXPECT_TRUE(t["bool"].equal(base.remainder(3).eq(0)));
  EXPECT_TRUE(t["c64"].equal(at::complex(base.to(at::kFloat), -base.to(at::kFloat))));
  EXPECT_EQ(t["scalar"].dim(), 0);
  EXPECT_EQ(t["scalar"].item<int64_t>(), 7);
  EXPECT_EQ(t["empty"].sizes(), at::IntArrayRef({0, 3}));
  const at::Tensor shared = base.to(at::kFloat).reshape({4, 6});
  EXPECT_TRUE(t["transposed"].equal(shared.t()));
  EXPECT_FALSE(t["transposed"].is_contiguous());
  EXPECT_TRUE(t["slice"].equal(shared.slice(0, 1, 3).slice(1, 2, 5)));
  // Views of one storage share memory, as in Python.
  EXPECT_EQ(t["transposed"].storage().data(), t["shared_full"].storage().data());
  EXPECT_EQ(t["slice"].storage().data(), t["shared_full"].storage().data());
  EXPECT_TRUE(t["expanded"].equal(at::arange(3, at::kFloat).expand({4, 3})));
}

TEST(CheckpointReaderTest, HugeViewOfATinyStorageIsRefused) {
  auto sd = ReadStateDict(Fixture("reader/stride0.pth"), {});
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(sd.status().message()), HasSubstr("1156000000 elements"));
  EXPECT_THAT(std::string(sd.status().message()), HasSubstr("storage of 1"));
}

TEST(CheckpointReaderTest, ReadsStateDictInFileOrder) {
  for (const char* name : {"tiny", "tiny_proto4"}) {
    auto sd = ReadStateDict(Fixture(std::string(name) + "/model_weights.pth"), {});
    ASSERT_TRUE(sd.ok()) << name << ": " << sd.status();
    ASSERT_EQ(sd->size(), 10u);
    EXPECT_EQ((*sd)[0].first, "features.0.weight");
    EXPECT_EQ((*sd)[0].second.sizes(), at::IntArrayRef({8, 3, 3, 3}));
    EXPECT_EQ(sd->back().first, "classifier.6.bias");
  }
}

TEST(CheckpointReaderTest, OsSystemPickleIsRefusedAndNothingRuns) {
  const std::string marker = Fixture("pwned_marker");
  std::filesystem::remove(marker);
  auto sd = ReadStateDict(Fixture("bad_os_system/model_weights.pth"), {});
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(sd.status().message()),
              HasSubstr("global 'posix.system' is not allowed"));
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(CheckpointReaderTest, BadFilesGetTheirCodes) {
  struct Case {
    const char* file;
    absl::StatusCode code;
    const char* message;
  } cases[] = {
      {"bad_truncated/model_weights.pth", absl::StatusCode::kDataLoss, "truncated"},
      {"bad_not_zip/model_weights.pth", absl::StatusCode::kDataLoss, "not a zip archive"},
      {"bad_not_state_dict/model_weights.pth", absl::StatusCode::kFailedPrecondition,
       "not a tensor"},
      {"no_such_dir/model_weights.pth", absl::StatusCode::kNotFound, "no file"},
  };
  for (const Case& c : cases) {
    auto sd = ReadStateDict(Fixture(c.file), {});
    EXPECT_EQ(sd.status().code(), c.code) << c.file << ": " << sd.status();
    EXPECT_THAT(std::string(sd.status().message()), HasSubstr(c.message)) << c.file;
  }
}

TEST(CheckpointReaderTest, MissingTensorRecordIsDataLoss) {
  std::string bytes = ReadFile(Fixture("tiny/model_weights.pth"));
  // Rename record "data/3" (local header and central directory) to "data/Z".
  const std::string from = "model_weights/data/3";
  size_t pos = 0;
  int renamed = 0;
  while ((pos = bytes.find(from, pos)) != std::string::npos) {
    if (pos + from.size() < bytes.size() && bytes[pos + from.size()] >= '0' &&
        bytes[pos + from.size()] <= '9') {
      pos += from.size();
      continue;  // data/30...
    }
    bytes[pos + from.size() - 1] = 'Z';
    ++renamed;
    pos += from.size();
  }
  ASSERT_EQ(renamed, 2);
  auto sd = ReadStateDict(WriteTemp("missing_record.pth", bytes), {});
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(sd.status().message()), HasSubstr("no record 'model_weights/data/3'"));
}

TEST(CheckpointReaderTest, CrcCatchesAFlippedWeightByte) {
  std::string bytes = ReadFile(Fixture("tiny/model_weights.pth"));
  auto zip = ZipReader::FromBuffer(bytes);
  ASSERT_TRUE(zip.ok());
  auto rec = (*zip)->Find("model_weights/data/0");
  ASSERT_TRUE(rec.ok());
  bytes[(*rec)->data_offset + 5] ^= 0x40;
  const std::string path = WriteTemp("flipped.pth", bytes);
  auto sd = ReadStateDict(path, {});
  EXPECT_EQ(sd.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(sd.status().message()), HasSubstr("CRC-32"));
  CheckpointReadOptions no_crc;
  no_crc.verify_crc = false;
  EXPECT_TRUE(ReadStateDict(path, no_crc).ok());
}

}  // namespace
}  // namespace modelserver
