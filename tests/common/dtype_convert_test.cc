#include "common/dtype_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace modelserver {
namespace {

HostTensor Floats(const std::vector<float>& v) {
  HostTensor t;
  t.dtype = DType::kFloat32;
  t.shape = {static_cast<int64_t>(v.size())};
  t.data.assign(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  return t;
}

std::vector<uint16_t> Halves(const HostTensor& t) {
  std::vector<uint16_t> out(t.data.size() / 2);
  std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

std::vector<float> AsFloats(const HostTensor& t) {
  std::vector<float> out(t.data.size() / 4);
  std::memcpy(out.data(), t.data.data(), t.data.size());
  return out;
}

// Bit patterns as torch.tensor([...]).to(dtype).view(torch.int16) gives them.
TEST(DtypeConvertTest, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between two bf16 values: rounds to the even one (1.0);
  // 1 + 3 * 2^-8 rounds up.
  auto t = ConvertFloat(Floats({1.0f, -2.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 0.0f}),
                        DType::kBFloat16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DType::kBFloat16);
  EXPECT_EQ(Halves(*t), (std::vector<uint16_t>{0x3f80, 0xc000, 0x3f80, 0x3f82, 0x0000}));
  auto nan = ConvertFloat(Floats({std::numeric_limits<float>::quiet_NaN()}), DType::kBFloat16);
  ASSERT_TRUE(nan.ok());
  auto back = ConvertFloat(*nan, DType::kFloat32);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::isnan(AsFloats(*back)[0]));
}

TEST(DtypeConvertTest, Fp16MatchesIeeeHalf) {
  auto t = ConvertFloat(Floats({1.0f, -2.0f, 65504.0f, 1e6f, 0x1p-24f}), DType::kFloat16);
  ASSERT_TRUE(t.ok()) << t.status();
  // 1e6 overflows to +inf; 2^-24 is the smallest subnormal.
  EXPECT_EQ(Halves(*t), (std::vector<uint16_t>{0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001}));
}

TEST(DtypeConvertTest, RoundTripsThroughFloat64Exactly) {
  const std::vector<float> v = {0.1f, -3.25f, 1e-30f, 123456.789f};
  auto d = ConvertFloat(Floats(v), DType::kFloat64);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->data.size(), v.size() * 8);
  auto f = ConvertFloat(*d, DType::kFloat32);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(AsFloats(*f), v);
}

TEST(DtypeConvertTest, RefusesNonFloatAndMalformedTensors) {
  HostTensor ints;
  ints.dtype = DType::kInt64;
  ints.shape = {1};
  ints.data.assign(8, '\0');
  EXPECT_EQ(ConvertFloat(ints, DType::kFloat32).status().code(),
            absl::StatusCode::kInvalidArgument);
  HostTensor short_data = Floats({1.0f, 2.0f});
  short_data.data.resize(5);
  EXPECT_EQ(ConvertFloat(short_data, DType::kFloat16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modelserver
