#include "common/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/server_process.h"

namespace modelserver {
namespace {

TEST(NpyTest, RoundTrip) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = {2, 3};
  const float v[6] = {1, 2, 3, 4, 5, 6.5};
  t.data.assign(reinterpret_cast<const char*>(v), sizeof(v));
  const std::string path = ::testing::TempDir() + "/rt.npy";
  ASSERT_TRUE(WriteNpy(path, t).ok());
  auto back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, t.shape);
  EXPECT_EQ(back->data, t.data);
  t.shape = {6};
  ASSERT_TRUE(WriteNpy(path, t).ok());
  EXPECT_EQ(ReadNpy(path)->shape, (std::vector<int64_t>{6}));
}

TEST(NpyTest, ReadsNumpyFiles) {
  auto x = ReadNpy(testing::FixturesDir() + "/tiny/input.npy");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->dtype, DType::kFloat32);
  EXPECT_EQ(x->shape, (std::vector<int64_t>{4, 3, 32, 32}));
}

TEST(NpyTest, RejectsBadFiles) {
  EXPECT_FALSE(ParseNpy("not npy").ok());
  std::string header = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(header.size()) +
                      '\0' + header + "abcd";
  EXPECT_THAT(std::string(ParseNpy(bytes).status().message()), ::testing::HasSubstr(">f4"));
}

}  // namespace
}  // namespace modelserver
