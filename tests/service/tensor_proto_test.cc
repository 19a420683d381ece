#include "server/service/tensor_proto.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

namespace modelserver {
namespace {

using ::testing::HasSubstr;
namespace v1 = modelserving::v1;

v1::Tensor MakeProto(std::vector<int64_t> shape, v1::DataType dtype, size_t bytes) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(dtype);
  t.set_data(std::string(bytes, '\0'));
  return t;
}

TEST(TensorProtoTest, AcceptsWellFormed) {
  auto t = FromProto(MakeProto({1, 3, 2, 2}, v1::FLOAT32, 48));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DType::kFloat32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{1, 3, 2, 2}));
  v1::Tensor back;
  ToProto(*std::move(t), &back);
  EXPECT_EQ(back.shape_size(), 4);
  EXPECT_EQ(back.data().size(), 48u);
}

TEST(TensorProtoTest, RejectsMalformed) {
  struct Case {
    v1::Tensor t;
    const char* message;
  } cases[] = {
      {MakeProto({1, 3}, v1::DATA_TYPE_UNSPECIFIED, 12), "DATA_TYPE_UNSPECIFIED is not set"},
      {MakeProto({1, 3}, static_cast<v1::DataType>(42), 12), "unknown"},
      {MakeProto({}, v1::FLOAT32, 4), "scalar"},
      {MakeProto({1, 3, 2, 2}, v1::FLOAT32, 47), "47 bytes, expected 48"},
      {MakeProto({1, -3}, v1::FLOAT32, 0), "negative"},
  };
  for (const Case& c : cases) {
    auto t = FromProto(c.t);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.message));
  }
}

TEST(TensorProtoTest, TopKIsSoftmaxOrdered) {
  HostTensor out;
  out.dtype = DType::kFloat32;
  out.shape = {2, 4};
  const float v[8] = {1, 3, 2, 0, -1, -1, 5, 4};
  out.data.assign(reinterpret_cast<const char*>(v), sizeof(v));
  auto top = TopK(out, 3);
  ASSERT_TRUE(top.ok());
  ASSERT_EQ(top->size(), 2u);
  EXPECT_EQ((*top)[0][0].first, 1);
  EXPECT_EQ((*top)[0][1].first, 2);
  EXPECT_EQ((*top)[0][2].first, 0);
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0) + std::exp(0.0);
  EXPECT_NEAR((*top)[0][0].second, std::exp(3.0) / z, 1e-6);
  EXPECT_EQ((*top)[1][0].first, 2);
  EXPECT_EQ((*top)[1][1].first, 3);
  auto all = TopK(out, 100);  // capped at the class count
  ASSERT_TRUE(all.ok());
  double sum = 0;
  for (const auto& c : (*all)[1]) sum += c.second;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  out.dtype = DType::kInt32;
  EXPECT_EQ(TopK(out, 1).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace modelserver
