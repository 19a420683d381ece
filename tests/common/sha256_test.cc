#include "common/sha256.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace modelserver {
namespace {

TEST(Sha256Test, KnownVectors) {
  Sha256 empty;
  EXPECT_EQ(empty.HexDigest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 abc;
  abc.Update("a");
  abc.Update("bc");
  EXPECT_EQ(abc.HexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, FileMatchesStreaming) {
  const std::string path = ::testing::TempDir() + "/sha_file";
  std::string data(10 << 20, 'x');
  data[12345] = 'y';
  std::ofstream(path, std::ios::binary) << data;
  Sha256 s;
  s.Update(data);
  auto f = Sha256File(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f, s.HexDigest());
  EXPECT_EQ(Sha256File(path + ".missing").status().code(), absl::StatusCode::kNotFound);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace modelserver
