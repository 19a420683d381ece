#include "server/model/state_dict_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "server/checkpoint/zip_reader.h"
#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

TEST(StateDictWriterTest, RoundTripsEveryDtypeAndView) {
  auto in = ReadStateDict(testing::FixturesDir() + "/reader/dtypes.pth", {});
  ASSERT_TRUE(in.ok()) << in.status();
  const std::string path = ::testing::TempDir() + "/written.pth";
  std::remove(path.c_str());
  ASSERT_TRUE(WriteStateDict(*in, path).ok());
  EXPECT_EQ(WriteStateDict(*in, path).code(), absl::StatusCode::kInternal);  // never overwrites
  auto out = ReadStateDict(path, {});                                        // CRCs checked
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in->size());
  for (size_t i = 0; i < in->size(); ++i) {
    EXPECT_EQ((*out)[i].first, (*in)[i].first);
    EXPECT_TRUE((*out)[i].second.equal((*in)[i].second)) << (*in)[i].first;
    EXPECT_EQ((*out)[i].second.scalar_type(), (*in)[i].second.scalar_type());
  }
  // Records are 64-byte aligned, as torch.save writes them.
  auto zip = ZipReader::Open(path);
  ASSERT_TRUE(zip.ok());
  for (const auto& e : (*zip)->entries()) {
    if (e.name.find("/data/") != std::string::npos) {
      EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    }
  }
  EXPECT_TRUE((*zip)->Find("archive/version").ok());
}

}  // namespace
}  // namespace modelserver
