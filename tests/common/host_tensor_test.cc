#include "common/host_tensor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace modelserver {
namespace {

using ::testing::HasSubstr;

TEST(HostTensorTest, SizesAndNames) {
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBFloat16), 2u);
  EXPECT_EQ(DTypeSize(DType::kInt64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kUnspecified), 0u);
  EXPECT_EQ(DTypeName(DType::kFloat16), "float16");
  EXPECT_EQ(ShapeString({1, 3, 224, 224}), "[1,3,224,224]");
  HostTensor t;
  t.shape = {2, 3, 4};
  EXPECT_EQ(t.NumElements(), 24);
}

TEST(HostTensorTest, CheckTensorBytesAcceptsExactLength) {
  EXPECT_TRUE(CheckTensorBytes(DType::kFloat32, {2, 3}, 24).ok());
  EXPECT_TRUE(CheckTensorBytes(DType::kUInt8, {0, 3}, 0).ok());
}

TEST(HostTensorTest, CheckTensorBytesRejectsMismatch) {
  absl::Status s = CheckTensorBytes(DType::kFloat32, {1, 3, 2, 2}, 47);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("47 bytes, expected 48"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[1,3,2,2]"));
}

TEST(HostTensorTest, CheckTensorBytesRejectsNegativeAndOverflow) {
  EXPECT_THAT(std::string(CheckTensorBytes(DType::kFloat32, {2, -1}, 0).message()),
              HasSubstr("negative"));
  EXPECT_THAT(std::string(CheckTensorBytes(DType::kFloat32, {1LL << 40, 1LL << 40}, 0).message()),
              HasSubstr("too large"));
  EXPECT_EQ(CheckTensorBytes(DType::kUnspecified, {1}, 4).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modelserver
